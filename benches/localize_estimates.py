"""Which position estimate is better on the demo campus: top-1 centre or the similarity-weighted mean?

Usage (after ``dycl-localize --demo``, from the folder holding ``dycl-demo/``)::

    python benches/localize_estimates.py [--checkpoint dycl-demo/last.pt] [--index .../test.dyclidx]

Embeds the test drone photos of the demo campus once and scores every
estimate setting on them (median / mean error against the GPS EXIF truth):
``top1``, and ``weighted`` for several top-k sizes, radii and temperatures.
Prints a Markdown table (docs/localize.md records it).
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="dycl-demo/last.pt")
    p.add_argument("--index", default="dycl-demo/localize/test.dyclidx")
    args = p.parse_args()

    from dycl.data import open_split
    from dycl.localize import Localizer, locate_embeddings, summarize
    from dycl.localize.truth import truths_for
    from dycl.train.config import demo_data_dir

    loc = Localizer.from_checkpoint(args.checkpoint, device="cpu", progress=False)
    index = loc.use_index(args.index)
    photos = list(open_split(demo_data_dir(), "test").drone_paths)
    emb, _ = loc.embed_files(photos)
    truths = truths_for(photos, "exif", print)
    names = [str(p) for p in photos]
    rows = []

    def score(label: str, **kw) -> None:
        s = summarize(locate_embeddings(emb, names, truths, index, **kw), index)
        rows.append((label, s["error_median_m"], s["error_mean_m"], s["within@100m"], s["within@200m"]))

    score("top1", method="top1")
    for k, radius, temperature in itertools.product((5, 10, 20), (50.0, 100.0, 200.0), (0.02, 0.05, 0.2)):
        score(f"weighted k={k} r={radius:g} m T={temperature:g}", method="weighted", top_k=k, radius_m=radius,
              temperature=temperature)
    print("| estimate | median m | mean m | within 100 m % | within 200 m % |\n|---|---:|---:|---:|---:|")
    for label, median, mean, w100, w200 in rows:
        print(f"| {label} | {median:.1f} | {mean:.1f} | {100 * w100:.1f} | {100 * w200:.1f} |")
    best = min(rows[1:], key=lambda r: (r[1], r[2]))
    print(f"\nbest weighted: {best[0]} (median {best[1]:.1f} m, mean {best[2]:.1f} m); top1: median "
          f"{rows[0][1]:.1f} m, mean {rows[0][2]:.1f} m")
    print(f"photos: {len(photos)}; tiles: {len(index)}; median of the per-setting medians: "
          f"{np.median([r[1] for r in rows[1:]]):.1f} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
