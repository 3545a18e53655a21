"""The report's figures: per-scale bars of the methods, re-rankings, scales and samplers; the Fig. 8
sweeps; Fig. 7 on the training set; examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .._files import write_json_atomic
from ..data import open_train_test
from ..figures import write_plots, write_rank_shift_profiles
from ..runs import CHECKPOINT_FILE, EMBEDDINGS_DIR
from ..task_files import load_embeddings
from ..tasks import TASK_FILES, TASKS, RerankConfig, evaluate_tasks, tasks_from_split
from .stats import SuiteResults, mean_interval
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
    for group, title in (("scales", "Fig. 6 analogue: single-scale Triplet vs Σ-Triplet, mAP per scale"),
                         ("scales_dycl", "extra: single DyCL terms vs DyCL, mAP per scale")):
        scale_keys = [k for k in suite.groups.get(group, ()) if results.has(k)]
        if len(scale_keys) > 1:
            labels = {k: suite.config(k).label for k in scale_keys}
            labels[scale_keys[-1]] = "multi-scale (" + labels[scale_keys[-1]] + ")"
            bars(group, {labels[k]: results.mean_results(k) for k in scale_keys}, title)
    sampler_keys = [k for k in suite.groups.get("sampler", ()) if results.has(k)]
    if len(sampler_keys) > 1:
        bars("sampler", {suite.config(k).label: results.mean_results(k) for k in sampler_keys},
             "DyCL: random vs geo batch sampler, mAP per scale")
    figures.update(_sweep_figures(results, img))
    figures.update(_figures_from_runs(results, img, data_dir))
    return figures


def _sweep_figures(results: SuiteResults, img: Path) -> dict[str, list[str]]:
    """Fig. 8: overall mAP against each swept parameter, mean and 95 % t interval over seeds, per task."""
    from ..analysis_plots import sweep_figure
    from ..plots import save_figure

    out: dict[str, list[str]] = {}
    for name, sweep in results.suite.sweeps.items():
        points = [(k, v) for k, v in sweep.points if results.has(k)]
        if len(points) < 2:
            continue
        series = {}
        for task in TASKS:
            series[task] = []
            for key, value in points:
                stat = results.stat(key, task, "mAP_overall")
                interval = mean_interval(stat.values)
                lo, hi = (interval.lo, interval.hi) if interval is not None else (stat.mean, stat.mean)
                series[task].append((value, stat.mean, lo, hi))
        file = f"results_sweep_{name}.png"
        save_figure(sweep_figure(series, sweep.parameter, "mAP overall",
                                 title=f"Fig. 8 analogue: {sweep.parameter}"), img / file)
        out[f"sweep_{name}"] = [f"img/{file}"]
    return out


#: Figures drawn from a run's checkpoint or embeddings, which a committed suite folder no longer has:
#: their captions and files are kept here, and reused while the files exist.
FIGURES_FROM_RUNS = "figures_from_runs.json"


def _figures_from_runs(results: SuiteResults, img: Path, data_dir: Path | None) -> dict[str, Any]:
    """Fig. 7 and the examples: drawn again when their runs' heavy files are there, else the last ones.
    Fig. 7 embeds the whole training set; it is drawn once per source run, not at every report."""
    cache = img / FIGURES_FROM_RUNS
    try:
        kept = json.loads(cache.read_text()) if cache.is_file() else {}
    except ValueError:
        kept = {}

    def still_there(name: str) -> bool:
        return bool(kept.get(name)) and all((img.parent / path).is_file() for _, path in kept[name])

    source = _rank_profile_source(results)
    out: dict[str, Any] = {}
    if source is not None and kept.get("rank_profile_source") == source and still_there("rank_profile"):
        out["rank_profile"], out["rank_profile_source"] = kept["rank_profile"], source
    elif profile := _rank_profile_figures(results, img, data_dir).get("rank_profile"):
        out["rank_profile"], out["rank_profile_source"] = profile, source
    elif still_there("rank_profile"):
        out["rank_profile"] = kept["rank_profile"]
        out["rank_profile_source"] = kept.get("rank_profile_source")
    examples = _example_figures(results, img, data_dir).get("examples")
    if examples or still_there("examples"):
        out["examples"] = examples or kept["examples"]
    write_json_atomic(cache, out)
    return {name: entries for name, entries in out.items() if name != "rank_profile_source"}


def _rank_profile_source(results: SuiteResults) -> list | None:
    """``[config key, seed]`` of the run Fig. 7 is drawn from: the first seed of the full model."""
    key = next((k for k in ("dycl-happier", "dycl") if results.has(k)), None)
    return None if key is None else [key, results.seeds_of(key)[0]]


def _rank_profile_figures(results: SuiteResults, img: Path, data_dir: Path | None) -> dict[str, list]:
    """Fig. 7 in the paper's form: the training set embedded by the first seed of the full model."""
    from ..embed import embed_split, resolve_device
    from ..models import load_model

    suite = results.suite
    source = _rank_profile_source(results)
    if source is None or data_dir is None:
        return {}
    key, seed = source
    checkpoint = RunSpec(suite.config(key), seed).folder(results.output) / CHECKPOINT_FILE
    try:
        train_split = open_train_test(data_dir)[0]
    except ValueError:
        return {}
    if not checkpoint.is_file():
        return {}
    model, info = load_model(checkpoint)
    device = resolve_device("auto")  # the training set at DA-Campus size wants a GPU when there is one
    model.to(device)
    sat, drone = embed_split(model, train_split, info["image_size"], batch_size=256, device=device,
                             amp=device != "cpu", workers=0, progress=False)
    thresholds = tuple(info.get("thresholds") or suite.training.get("thresholds", (200.0, 500.0)))
    label = f"{suite.config(key).label} (seed {seed}), training set"
    files = write_rank_shift_profiles(img, tasks_from_split(sat, drone, train_split, thresholds),
                                      prefix="results_rank_profile", label=label)
    captions = [f.stem.removeprefix("results_rank_profile_").replace("_to_", " → ") for f in files]
    pairs = zip(captions, files, strict=True)
    return {"rank_profile": [(f"{label}: {c}", f"img/{f.name}") for c, f in pairs]}


def _example_figures(results: SuiteResults, img: Path, data_dir: Path | None) -> dict[str, list]:
    """Ranked lists (Fig. 1) of the first seed of two methods, a rank-shift (Fig. 7) and a map (Fig. 3)."""
    suite = results.suite
    def embedded(key: str) -> bool:  # a committed suite folder keeps no embeddings
        folder = RunSpec(suite.config(key), results.seeds_of(key)[0]).folder(results.output)
        return (folder / EMBEDDINGS_DIR).is_dir()

    candidates = [k for k in ("infonce", "dycl-happier") if results.has(k) and embedded(k)]
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
                out["rank_shifts"].append((f"extra: {suite.config(key).label}, sampled test queries: where "
                                           "the initial top results move after k-reciprocal re-ranking",
                                           target))
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
