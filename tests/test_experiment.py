"""dycl-experiment: a 2-run suite on a tiny synthetic campus (1 step per epoch).

Checks the runner's resumability (a finished run is skipped, an interrupted
training resumes from its checkpoint, an interrupted suite continues), that the
report is generated from the runs' result files, that a run of another plan is
refused, the trainer's ``loss_options`` hook the single-scale runs rely on, and
the CLI.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dycl.cli import experiment_main, train_main
from dycl.experiment import (
    BEGIN_MARK,
    END_MARK,
    CampusSpec,
    RunConfig,
    Stat,
    Suite,
    beyond_spread,
    consistent_sign,
    planned_overrides,
    run_suite,
    splice_generated,
    suite_states,
    write_report,
)
from dycl.tables import read_metrics
from dycl.tasks import TASKS
from dycl.train import run_training

TINY_TRAINING = {
    "backbone": "resnet18", "pretrained": False, "embedding_dim": 16, "image_size": 32, "epochs": 2,
    "batch_size": 8, "lr": 1e-4, "thresholds": [100.0, 200.0], "max_steps_per_epoch": 1, "workers": 0,
}


def tiny_suite(**changes) -> Suite:
    settings = dict(
        name="tiny",
        description="two runs on a tiny campus",
        campus=CampusSpec(8, 6, 4, 32, seed=0),
        training=TINY_TRAINING,
        configs=(RunConfig("infonce", "InfoNCE", "infonce"),
                 RunConfig("dycl-scale1", "single-scale middle", "dycl:0.2,cluster:0.1",
                           loss_options={"dycl": {"scales": [1]}})),
        seeds=(0,),
        groups={"methods": ("infonce", "dycl-scale1")},
    )
    settings.update(changes)
    return Suite(**settings)


def epochs_in_log(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "epoch"]


def test_suite_resumes_skips_finished_runs_and_reports_from_results(campus, tmp_path):
    suite = tiny_suite()
    out = tmp_path / "suite"
    first, second = suite.runs()

    # 1. An interrupted suite: only the first run is trained in this call.
    log = io.StringIO()
    states = run_suite(suite, out, data_dir=campus, device="cpu", max_runs=1, report=False, log=log)
    assert [s.state for s in states] == ["done", "pending"]
    assert not (out / "report").exists()
    finished = first.folder(out)
    stamp = (finished / "last.pt").stat().st_mtime_ns
    assert epochs_in_log(finished) == [1, 2]
    for rerank in suite.rerankings:
        assert set(read_metrics(finished / "eval" / f"{rerank}.json")) == set(TASKS)

    # 2. An interrupted training: the second run stopped after its first epoch (as if killed there).
    overrides = planned_overrides(suite, second, out, campus, device="cpu")
    assert run_training({**overrides, "stop_after_epoch": 1}) is None
    states = suite_states(suite, out, campus)
    assert [(s.state, s.epochs_done) for s in states] == [("done", 2), ("partial", 1)]

    # 3. Continue: the finished run is skipped, the partial one resumes after epoch 1.
    log = io.StringIO()
    states = run_suite(suite, out, data_dir=campus, device="cpu", log=log)
    text = log.getvalue()
    assert [s.state for s in states] == ["done", "done"]
    assert f"{first.name}: training" not in text and f"{second.name}: resuming after epoch 1" in text
    assert (finished / "last.pt").stat().st_mtime_ns == stamp
    assert epochs_in_log(second.folder(out)) == [1, 2]  # epoch 1 from the first call, epoch 2 resumed
    saved = json.loads((second.folder(out) / "config.json").read_text())
    assert saved["loss_options"] == {"dycl": {"scales": [1]}}  # the trainer hook reached config.json

    # 4. The report comes from the result files: its numbers are those of eval/none.json, which
    #    equal the trainer's own metrics.json (plain cosine distances).
    report = (out / "report" / "results.md").read_text()
    for spec in suite.runs():
        evaluated = read_metrics(spec.folder(out) / "eval" / "none.json")
        trained = read_metrics(spec.folder(out) / "metrics.json")
        for task in TASKS:
            assert evaluated[task]["H-AP"] == pytest.approx(trained[task]["H-AP"], abs=1e-6)
        cells = [f"{100 * evaluated[t][m]:.1f}" for t in TASKS for m in ("H-AP", "ASI", "NDCG")]
        assert f"| {spec.config.label} | " + " | ".join(cells) + " |" in report
    assert "Partial results" not in report
    for task in ("satellite_to_drone", "drone_to_satellite"):
        png = out / "report" / "img" / f"results_methods_{task}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"img/{png.name}" in report
    rows = (out / "report" / "results.csv").read_text().splitlines()
    assert len(rows) > 1 and rows[0].startswith("suite,config,label,seed,reranking,task,metric,value")

    # 5. Nothing left to do: a third call trains nothing.
    log = io.StringIO()
    run_suite(suite, out, data_dir=campus, device="cpu", report=False, log=log)
    assert "training" not in log.getvalue() and "resuming" not in log.getvalue()

    # 6. A finished run of another plan is refused rather than mixed in.
    other = tiny_suite(training={**TINY_TRAINING, "epochs": 3})
    with pytest.raises(ValueError, match="epochs=2 .*plans 3"):
        run_suite(other, out, data_dir=campus, device="cpu", report=False, log=io.StringIO())

    # 7. The docs block is spliced between the markers, keeping the hand-written text around it.
    docs = tmp_path / "docs"
    docs.mkdir()
    hand_written = f"# Results\n\nreading before\n\n{BEGIN_MARK}\nold\n{END_MARK}\n\nafter\n"
    (docs / "results.md").write_text(hand_written)
    write_report(suite, out, data_dir=campus, docs=docs)
    spliced = (docs / "results.md").read_text()
    assert spliced.startswith("# Results\n\nreading before\n\n") and spliced.rstrip().endswith("after")
    assert "\nold\n" not in spliced and "### Table II analogue" in spliced
    assert (docs / "img" / "results_methods_satellite_to_drone.png").is_file()

    # 8. Without the runs' embeddings (a committed suite folder), the examples drawn from them are kept.
    examples = report.split("### Examples", 1)[1]
    import shutil

    shutil.rmtree(first.folder(out) / "embeddings")
    write_report(suite, out, data_dir=campus)
    again = (out / "report" / "results.md").read_text()
    assert "### Examples" in again and again.split("### Examples", 1)[1] == examples

    # 9. The CLI: list shows each run's state, report regenerates.
    assert experiment_main(["list", "--suite", "smoke"]) == 0
    assert experiment_main(["report", "--suite", "smoke", "--output", str(tmp_path / "nothing")]) == 2


def test_partial_suite_report_says_what_is_missing(campus, tmp_path):
    suite = tiny_suite(training={**TINY_TRAINING, "epochs": 1}, seeds=(0, 1))
    out = tmp_path / "suite"
    run_suite(suite, out, data_dir=campus, device="cpu", max_runs=1, log=io.StringIO())
    report = (out / "report" / "results.md").read_text()
    assert ("**Partial results**: 1 of 4 runs finished; missing: seed 0: dycl-scale1; seed 1: all 2 "
            "configurations.") in report


def test_trainer_loss_options_hook_rejects_bad_options_in_one_line(campus, tmp_path, capsys):
    base = ["--data-dir", str(campus), "--backbone", "resnet18", "--no-pretrained", "--image-size", "32",
            "--batch-size", "8", "--thresholds", "100", "200", "--workers", "0", "--no-progress",
            "--loss", "dycl:0.2,cluster:0.1"]
    bad = '{"dycl": {"scales": [7]}}'
    assert train_main([*base, "--output", str(tmp_path / "a"), "--loss-options", bad]) == 2
    err = capsys.readouterr().err
    assert "--loss-options: scales: expected a list of distinct scale indices in [0, 2]" in err
    with pytest.raises(SystemExit) as exc:  # not JSON: argparse's usage error
        train_main([*base, "--output", str(tmp_path / "b"), "--loss-options", "{scales"])
    assert exc.value.code == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_spread_and_sign_rules():
    a, b = Stat((0.50, 0.52)), Stat((0.40, 0.49))
    assert beyond_spread(a, b) is True and beyond_spread(b, a) is True
    assert beyond_spread(Stat((0.50, 0.52)), Stat((0.45, 0.51))) is False  # ranges overlap
    assert beyond_spread(Stat((0.5,)), b) is None  # one seed: cannot tell
    assert consistent_sign([0.1, 0.2]) is True and consistent_sign([0.1, -0.2]) is False
    assert consistent_sign([0.1]) is None and consistent_sign([0.0, 0.1]) is False
    assert consistent_sign([-1e-9, -2e-9]) is False  # float32 rounding, not a difference
    assert a.cell() == "51.0 ± 1.4" and Stat((0.5,)).cell() == "50.0" and Stat(()).cell() == "–"


def test_splice_generated_replaces_or_appends_the_block():
    block = "new table"
    doc = f"intro\n{BEGIN_MARK}\nold\n{END_MARK}\noutro\n"
    out = splice_generated(doc, block)
    assert out.startswith("intro\n") and out.endswith("outro\n") and "old" not in out and block in out
    assert splice_generated(out, "newer").count(BEGIN_MARK) == 1
    appended = splice_generated("hand-written\n", block)
    assert appended.startswith("hand-written\n\n" + BEGIN_MARK) and appended.rstrip().endswith(END_MARK)


def test_per_configuration_settings_and_committed_results(campus, tmp_path):
    """A configuration's ``training`` overrides (the release's schedule here) are planned, saved in the
    run's config.json, checked on resume, and the release section compares the two runs. Then what git
    keeps of the suite folder (its .gitignore drops checkpoints and embeddings) still reads as finished
    runs, and a run missing a result it can no longer score is trained again."""
    import shutil

    release = {"schedule": "release", "schedule_epochs": 15, "warmup_epochs": 1}
    configs = (RunConfig("happier", "HAPPIER", "happier:0.9,cluster:0.1"),
               RunConfig("happier-release", "HAPPIER, release schedule", "happier:0.9,cluster:0.1",
                         training=release))
    suite = tiny_suite(training={**TINY_TRAINING, "epochs": 1}, configs=configs,
                       groups={"methods": ("happier",), "release": ("happier", "happier-release")})
    out = tmp_path / "suite"
    run_suite(suite, out, data_dir=campus, device="cpu", log=io.StringIO())
    plain, changed = (json.loads((spec.folder(out) / "config.json").read_text()) for spec in suite.runs())
    assert plain["schedule"] == "paper" and plain["warmup_epochs"] == 0
    assert (changed["schedule"], changed["schedule_epochs"], changed["warmup_epochs"]) == ("release", 15, 1)
    report = (out / "report" / "results.md").read_text()
    section = report.split("### The authors' release's training choices", 1)[1]
    assert "| HAPPIER | " in section and "| HAPPIER, release schedule | " in section
    longer = RunConfig("happier-release", "HAPPIER, release schedule", "happier:0.9,cluster:0.1",
                       training={**release, "schedule_epochs": 30})
    states = suite_states(tiny_suite(training={**TINY_TRAINING, "epochs": 1}, configs=(configs[0], longer),
                                     groups={"methods": ("happier",)}), out, campus)
    assert states[1].state == "stale" and "schedule_epochs=15" in states[1].message

    ignored = (out / ".gitignore").read_text().splitlines()
    assert {"last.pt", "embeddings/", "data/"} <= set(ignored)
    first, second = (spec.folder(out) for spec in suite.runs())
    for folder in (first, second):  # what a fresh clone has
        (folder / "last.pt").unlink()
        shutil.rmtree(folder / "embeddings")
    (second / "eval" / "k-reciprocal.json").unlink()
    assert [s.state for s in suite_states(suite, out, campus)] == ["done", "started"]
    log = io.StringIO()
    states = run_suite(suite, out, data_dir=campus, device="cpu", report=False, log=log)
    assert [s.state for s in states] == ["done", "done"]
    assert f"{suite.runs()[0].name}: training" not in log.getvalue()
    assert f"{suite.runs()[1].name}: training" in log.getvalue()
    assert (second / "eval" / "k-reciprocal.json").is_file()


def test_suite_scores_its_table4_seeds_once(tmp_path, monkeypatch):
    """The Table IV entry: one result file per seed, written once (the trained network is swapped for
    the fixed pixel features here, so the test takes a second)."""
    from dycl.experiment import runner, table4

    calls = []

    def quick_task(seed, settings):
        calls.append((seed, settings.seed))
        return table4.shapes_task(4, 16, seed=seed)

    monkeypatch.setattr(table4, "trained_shapes_task", quick_task)
    suite = tiny_suite(table4_seeds=(0, 1))
    log = io.StringIO()
    runner.run_table4(suite, tmp_path, log)
    runner.run_table4(suite, tmp_path, log)  # nothing left: no second call
    assert calls == [(0, 0), (1, 1)]
    saved = json.loads((tmp_path / "table4" / "seed1.json").read_text())
    expected = table4.table4_miniature(task=table4.shapes_task(4, 16, seed=1))
    assert saved["rows"]["MSRerank (paper)"]["mAP_overall"] == pytest.approx(
        expected["MSRerank (paper)"]["mAP_overall"], abs=1e-12)
    assert "table4/seed1: mAP none" in log.getvalue()


def test_report_keeps_the_random_baseline_without_the_campus(campus, tmp_path):
    """The random-embedding row is computed where the campus is and kept in the report folder, so a
    suite folder without its campus (a fresh clone) shows the same row; a row saved for other data is
    not shown."""
    suite = tiny_suite(configs=(RunConfig("dycl", "DyCL", "dycl:0.2,cluster:0.1"),),
                       groups={"methods": ("dycl",)})
    out = tmp_path / "suite"
    run_suite(suite, out, data_dir=campus, device="cpu", log=io.StringIO())

    def random_rows() -> list[str]:
        text = (out / "report" / "results.md").read_text()
        return [line for line in text.splitlines() if line.startswith("| *random embeddings* |")]

    with_data = random_rows()
    assert len(with_data) == 3  # Table II and both Table III tables
    cache = out / "report" / "random_baseline.json"
    assert json.loads(cache.read_text())["data_sha256"]
    write_report(suite, out)  # no data_dir: the suite's own campus folder under out/data does not exist
    assert not (out / "data").exists()
    assert random_rows() == with_data
    saved = json.loads(cache.read_text())
    cache.write_text(json.dumps({**saved, "data_sha256": "another dataset"}))
    write_report(suite, out)
    assert random_rows() == []
