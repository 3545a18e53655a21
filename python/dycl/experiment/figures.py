"""The report's figures: per-scale bars of the methods, re-rankings, scales and samplers; examples."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..data import open_train_test
from ..figures import write_plots
from ..runs import EMBEDDINGS_DIR
from ..tasks import TASK_FILES, TASKS, RerankConfig, evaluate_tasks, load_embeddings
from .stats import SuiteResults
from .suites import RERANKINGS, RunSpec


def write_figures(results: SuiteResults, img: Path, data_dir: Path | None) -> dict[str, Any]:
    """The report's figures (PNG, into ``img``); returns their names relative to the report."""
    from ..plots import save_figure, scale_bars_figure

    suite = results.suite
    img.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}

    def bars(name: str, runs: dict[str, dict], title: str) -> None:
        """One figure per task (both tasks side by side get too wide with many bars)."""
        if not runs:
            return
        figures[name] = []
        for task in TASKS:
            per_task = {label: {task: r[task]} for label, r in runs.items() if task in r}
            if per_task:
                file = f"results_{name}_{TASK_FILES[task].removesuffix('.npz')}.png"
                save_figure(scale_bars_figure(per_task, metric="mAP", title=f"{title}, {task}"), img / file)
                figures[name].append(f"img/{file}")

    methods = [k for k in suite.groups.get("methods", ()) if results.has(k)]
    bars("methods", {suite.config(k).label: results.mean_results(k) for k in methods},
         f"{suite.name}: mAP per scale, no re-ranking (mean over seeds)")
    best = "dycl-happier" if results.has("dycl-happier") else (methods[-1] if methods else None)
    if best is not None:
        bars("rerank", {RERANKINGS[r][0]: results.mean_results(best, r) for r in suite.rerankings
                        if results.has(best, r)},
             f"{suite.config(best).label}: mAP per scale with each re-ranking")
    scale_keys = [k for k in suite.groups.get("scales", ()) if results.has(k)]
    if len(scale_keys) > 1:
        labels = {k: suite.config(k).label for k in scale_keys}
        labels[scale_keys[-1]] = "multi-scale (" + labels[scale_keys[-1]] + ")"
        bars("scales", {labels[k]: results.mean_results(k) for k in scale_keys},
             "Fig. 6 analogue: single- vs multi-scale DyCL, mAP per scale")
    sampler_keys = [k for k in suite.groups.get("sampler", ()) if results.has(k)]
    if len(sampler_keys) > 1:
        bars("sampler", {suite.config(k).label: results.mean_results(k) for k in sampler_keys},
             "DyCL: random vs geo batch sampler, mAP per scale")
    figures.update(_example_figures(results, img, data_dir))
    return figures


def _example_figures(results: SuiteResults, img: Path, data_dir: Path | None) -> dict[str, list]:
    """Ranked lists (Fig. 1) of the first seed of two methods, a rank-shift (Fig. 7) and a map (Fig. 3)."""
    suite = results.suite
    candidates = [k for k in ("infonce", "dycl-happier") if results.has(k)]
    if not candidates or data_dir is None:
        return {}
    try:
        train_split, test_split = open_train_test(data_dir)
    except ValueError:
        return {}
    out: dict[str, list] = {"ranked_lists": [], "rank_shifts": [], "map": []}
    for key in candidates:
        seed = results.seeds_of(key)[0]
        folder = RunSpec(suite.config(key), seed).folder(results.output)
        tasks = load_embeddings(folder / EMBEDDINGS_DIR)
        evaluation = evaluate_tasks(tasks, RerankConfig(), train_split, progress=False)
        scratch = img / f".plots-{key}"
        files = write_plots(scratch, tasks, evaluation, split=test_split, n_queries=3, top_k=8,
                            progress=False)
        for file in files:
            stem = file.stem
            if stem.startswith("ranked_lists_"):
                target = img / f"results_ranked_lists_{key}_{stem.removeprefix('ranked_lists_')}.png"
                out["ranked_lists"].append((f"{suite.config(key).label} (seed {seed}): "
                                            f"{stem.removeprefix('ranked_lists_').replace('_to_', ' → ')}, "
                                            "top 8, frames coloured by level", target))
            elif stem.startswith("rank_shifts_") and key == candidates[-1]:
                target = img / f"results_{stem}_{key}.png"
                out["rank_shifts"].append((f"{suite.config(key).label}: where the initial top results "
                                           "move after k-reciprocal re-ranking (Fig. 7 analogue)", target))
            elif stem == "map" and key == candidates[-1]:
                target = img / "results_test_map.png"
                out["map"].append(("The test buildings around the densest one, 200 m and 500 m circles "
                                   "(Fig. 3 analogue)", target))
            else:
                continue
            shutil.copyfile(file, target)
        shutil.rmtree(scratch, ignore_errors=True)
    ordered = out["ranked_lists"] + out["rank_shifts"] + out["map"]
    return {"examples": [(caption, f"img/{path.name}") for caption, path in ordered]}


__all__ = ["write_figures"]
