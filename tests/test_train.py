"""dycl-train: a short run that learns, exact resume, two-process DDP equality, CLI errors.

Everything runs on a tiny synthetic campus (8 train / 6 test buildings, 4
drone views, 32 px) with ResNet-18 from random initialisation and 1-2 steps
per epoch. Thresholds of 100/200 m give this small campus pure negatives
(level 0) in the training batches, so every term of the paper's loss is active.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dycl import __version__
from dycl.cli import train_main
from dycl.data import open_train_test
from dycl.data.synth import generate_campus
from dycl.distributed import DistInfo
from dycl.runs import RUN_ARTIFACTS, truncate_log
from dycl.tasks import TASK_FILES, TASKS
from dycl.train import (
    SeededAugmentation,
    TrainConfig,
    Trainer,
    merge_resumed_config,
    prepare_run,
    validate_config,
)

TINY = ["--backbone", "resnet18", "--no-pretrained", "--image-size", "32", "--embedding-dim", "16",
        "--batch-size", "8", "--thresholds", "100", "200", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="session")
def other_campus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("campus") / "other"
    generate_campus(root, train_buildings=8, test_buildings=6, drone_views=4, image_size=32, seed=1,
                    workers=1, progress=False)
    return root


def run_cli(*args: str) -> int:
    return train_main([str(a) for a in args])


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def load_ckpt(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- a run that learns


def test_training_steps_lower_the_loss_of_a_batch(campus, tmp_path):
    config, state = prepare_run({
        "data_dir": str(campus), "output": str(tmp_path / "run"), "backbone": "resnet18", "pretrained": False,
        "image_size": 32, "embedding_dim": 16, "batch_size": 8, "thresholds": (100.0, 200.0), "workers": 0,
        "lr": 1e-4, "epochs": 20, "progress": False,  # a long schedule: the lr stays high
    })
    assert state is None and config.head_lr == pytest.approx(2e-4)  # the paper's 2x head ratio
    train, test = open_train_test(config.data_dir, config.dataset_format)
    trainer = Trainer(config, train, test, DistInfo(0, 1, 0, torch.device("cpu")))
    batch = next(iter(trainer.epoch_loader(0)))
    with torch.no_grad():
        before = float(trainer.batch_loss(batch))
    assert all(float(v) > 0 for v in trainer.loss.last_terms.values()), trainer.loss.last_terms
    weights_before = trainer.model.fc.weight.detach().clone()
    for _ in range(6):
        trainer.train_step(batch)
    with torch.no_grad():
        after = float(trainer.batch_loss(batch))
    assert after < 0.8 * before, (before, after)
    assert not torch.equal(weights_before, trainer.model.fc.weight)
    # Frozen BatchNorm: no gradient, running statistics untouched.
    bn = trainer.model.backbone[1]
    assert not bn.weight.requires_grad and not bn.training


def test_cli_run_writes_every_artifact(campus, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("stale")  # replaced under --overwrite
    (run / "notes.txt").write_text("mine")  # not ours: kept
    code = run_cli("--data-dir", campus, "--output", run, *TINY, "--epochs", "2",
                   "--max-steps-per-epoch", "1", "--overwrite")
    assert code == 0
    out = capsys.readouterr().out
    assert "Table II" in out and "Table III" in out and "drone->satellite" in out
    assert (run / "notes.txt").read_text() == "mine"

    config = json.loads((run / "config.json").read_text())
    assert config["version"] == __version__
    assert config["loss"] == "dycl:0.2,cluster:0.1,happier:0.9" and config["lr"] == 5e-5
    assert config["head_lr"] == 1e-4 and config["weight_decay"] == 1e-4
    assert config["thresholds"] == [100.0, 200.0] and config["data"]["train_buildings"] == 8

    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics) == list(TASKS)
    for task in TASKS:
        for key in ("H-AP", "ASI", "NDCG", "mAP_0", "mAP_2", "R@1_0", "R@5_1", "R@10_2", "mAP_overall",
                    "R@1_overall", "err@1_mean_m", "within@100m"):
            assert key in metrics[task], (task, key)
        assert 0.0 <= metrics[task]["H-AP"] <= 1.0

    ckpt = load_ckpt(run)  # weights_only: plain tensors and primitives
    for key in ("model", "loss", "optimizer", "scheduler", "proxy_optimizer", "proxy_scheduler", "scaler",
                "sampler", "rng", "epoch", "config", "metrics"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 2
    assert ckpt["metrics"]["last"]["satellite->drone"]["H-AP"] == metrics["satellite->drone"]["H-AP"]
    assert any(k.startswith("backbone.") for k in ckpt["model"]) and "fc.weight" in ckpt["model"]
    assert not list(run.glob("*.tmp"))

    events = [r["event"] for r in read_log(run)]
    assert events == ["epoch", "epoch", "eval"]
    epoch_line = read_log(run)[0]
    assert set(epoch_line["terms"]) == {"dycl", "cluster", "happier"} and epoch_line["images_per_s"] > 0
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1

    # The saved test embeddings re-score to the reported metrics without the network.
    from dycl.metrics import evaluate_embeddings

    for task in TASKS:
        with np.load(run / "embeddings" / TASK_FILES[task]) as f:
            again = evaluate_embeddings(f["query"], f["gallery"], f["query_ids"], f["gallery_ids"],
                                        f["levels"], coords=f["coords"], thresholds=tuple(f["thresholds"]))
        assert again["H-AP"] == pytest.approx(metrics[task]["H-AP"], abs=1e-12)


# --------------------------------------------------------------------------- resume


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(campus, tmp_path):
    common = ["--data-dir", campus, *TINY, "--epochs", "3", "--max-steps-per-epoch", "2", "--eval-every", "1",
              "--lr", "1e-3"]
    whole, split_run = tmp_path / "whole", tmp_path / "split"
    assert run_cli(*common, "--output", whole) == 0
    assert run_cli(*common, "--output", split_run, "--stop-after-epoch", "1") == 0
    assert load_ckpt(split_run)["epoch"] == 1 and not (split_run / "metrics.json").exists()
    # Resume with only the runtime options (the rest comes from the checkpoint) and other workers.
    assert run_cli("--output", split_run, "--resume", "--workers", "2", "--no-progress") == 0

    assert (whole / "metrics.json").read_bytes() == (split_run / "metrics.json").read_bytes()
    a, b = load_ckpt(whole), load_ckpt(split_run)
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    assert a["scheduler"] == b["scheduler"]

    def strip(records):
        return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "time")} for r in records]

    assert strip(read_log(whole)) == strip(read_log(split_run))

    # Resuming a finished run only reprints its tables.
    metrics_bytes = (split_run / "metrics.json").read_bytes()
    log_bytes = (split_run / "log.jsonl").read_bytes()
    assert run_cli("--output", split_run, "--resume", "--no-progress") == 0
    assert (split_run / "metrics.json").read_bytes() == metrics_bytes
    assert (split_run / "log.jsonl").read_bytes() == log_bytes
    for task in TASKS:
        with np.load(whole / "embeddings" / TASK_FILES[task]) as f, \
                np.load(split_run / "embeddings" / TASK_FILES[task]) as g:
            np.testing.assert_array_equal(f["query"], g["query"])


def test_truncate_log_drops_epochs_after_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"event": "epoch", "epoch": 1}, {"event": "eval", "epoch": 1}, {"event": "epoch", "epoch": 2}]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"event": "ep')  # cut off by a crash
    truncate_log(log, 1)
    assert [json.loads(line) for line in log.read_text().splitlines()] == lines[:2]
    truncate_log(tmp_path / "missing.jsonl", 1)  # nothing to do


def test_seeded_augmentation_depends_only_on_seed_epoch_and_index():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.rand(3) + i

    data = SeededAugmentation(Noisy(), seed=3)
    forward = [data[i] for i in range(5)]
    torch.manual_seed(0)
    outside = torch.get_rng_state()
    backward = [data[i] for i in reversed(range(5))][::-1]
    assert torch.equal(torch.get_rng_state(), outside)  # the caller's generator is left alone
    assert all(torch.equal(x, y) for x, y in zip(forward, backward, strict=True))
    data.epoch = 1
    assert not torch.equal(data[0], forward[0])
    assert not torch.equal(SeededAugmentation(Noisy(), seed=4)[0], forward[0])


def test_resumed_configuration_rules():
    saved = validate_config(TrainConfig(data_dir="d", output="o", backbone="resnet18")).to_dict()
    same = merge_resumed_config(saved, {"output": "o", "backbone": "resnet18", "head_lr": 1e-4,
                                        "workers": 3, "stop_after_epoch": 2})
    assert same.backbone == "resnet18" and same.workers == 3 and same.stop_after_epoch == 2
    assert merge_resumed_config({**saved, "stop_after_epoch": 1}, {"output": "o"}).stop_after_epoch is None
    for name, value in (("backbone", "resnet34"), ("lr", 1e-3), ("loss", "dycl"),
                        ("thresholds", (100.0, 300.0)), ("epochs", 3), ("batch_size", 64), ("seed", 1),
                        ("sampler", "geo")):
        with pytest.raises(ValueError, match=f"^{name}: the checkpoint was trained with"):
            merge_resumed_config(saved, {"output": "o", name: value})


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, args: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    code = train_main(args)
    if code != 0:
        raise SystemExit(code)


def test_two_processes_take_the_single_process_first_step(campus, tmp_path):
    args = ["--data-dir", str(campus), *TINY, "--epochs", "1", "--max-steps-per-epoch", "1",
            "--device", "cpu"]
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    context = mp.spawn(_ddp_worker, args=(_free_port(), [*args, "--output", str(ddp_run)]), nprocs=2,
                       join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail("distributed training did not finish in time")
    assert run_cli(*args, "--output", single_run) == 0

    ddp_epoch, single_epoch = read_log(ddp_run)[0], read_log(single_run)[0]
    assert ddp_epoch["step"] == 1  # one global step
    assert ddp_epoch["loss"] == pytest.approx(single_epoch["loss"], rel=1e-6)
    for name, value in single_epoch["terms"].items():
        assert ddp_epoch["terms"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert single_epoch["terms"]["dycl"] > 0
    ddp_config = json.loads((ddp_run / "config.json").read_text())
    assert ddp_config["world_size"] == 2
    # Rank 0 alone writes: one TensorBoard file, one log line per event.
    assert len(list((ddp_run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert [r["event"] for r in read_log(ddp_run)] == ["epoch", "eval"]
    a, b = load_ckpt(ddp_run)["model"], load_ckpt(single_run)["model"]
    assert torch.allclose(a["fc.weight"], b["fc.weight"], atol=1e-6)


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def finished_run(campus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert run_cli("--data-dir", campus, "--output", run, *TINY, "--epochs", "1", "--max-steps-per-epoch",
                   "1") == 0
    return run


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case, expected", [
    ("missing data", "--data-dir: "),
    ("malformed data", "train.txt:2"),
    ("unknown loss", "--loss: unknown loss 'nope'"),
    ("batch too large", "--batch-size: 64 pairs is larger than the training set (32 pairs"),
    ("resume without checkpoint", "--resume: no checkpoint"),
    ("other configuration", "--backbone: the checkpoint was trained with backbone='resnet18'"),
    ("other data", "is not the data the checkpoint was trained on"),
    ("existing output", "is not empty; pass --resume"),
    ("resume and overwrite", "--resume: --resume and --overwrite contradict"),
    ("no output", "--output: no output folder"),
    ("bad value", "--epochs: expected an integer >= 1"),
])
def test_bad_input_is_one_line_exit_2_and_touches_no_run(case, expected, campus, other_campus, finished_run,
                                                         tmp_path, capsys):
    before = _snapshot(finished_run)
    bad = tmp_path / "bad"
    (bad / "satellite").mkdir(parents=True)
    (bad / "drone").mkdir()
    (bad / "satellite" / "train.txt").write_text("path class_id latitude longitude\nsat.jpg 1 abc 2\n")
    (bad / "drone" / "train.txt").write_text("path class_id latitude longitude\n")
    fresh = tmp_path / "fresh"
    args = {
        "missing data": ["--data-dir", tmp_path / "nope", "--output", fresh],
        "malformed data": ["--data-dir", bad, "--output", fresh],
        "unknown loss": ["--data-dir", campus, "--output", fresh, "--loss", "dycl:0.2,nope"],
        "batch too large": ["--data-dir", campus, "--output", fresh, "--batch-size", "64"],
        "resume without checkpoint": ["--output", fresh, "--resume"],
        "other configuration": ["--output", finished_run, "--resume", "--backbone", "resnet34"],
        "other data": ["--output", finished_run, "--resume", "--data-dir", other_campus],
        "existing output": ["--data-dir", campus, "--output", finished_run],
        "resume and overwrite": ["--output", finished_run, "--resume", "--overwrite"],
        "no output": ["--data-dir", campus],
        "bad value": ["--data-dir", campus, "--output", fresh, "--epochs", "0"],
    }[case]
    assert run_cli(*TINY, *args) == 2  # the later of a repeated flag wins
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dycl-train: error: "), err
    assert expected in err[0], err[0]
    assert "Traceback" not in err[0]
    assert _snapshot(finished_run) == before
    assert not fresh.exists()


def test_run_artifacts_are_the_documented_files():
    assert set(RUN_ARTIFACTS) == {"config.json", "last.pt", "metrics.json", "log.jsonl", "tensorboard",
                                  "embeddings"}


# --------------------------------------------------------------------------- demo plumbing


def test_demo_generates_the_campus_once_and_prints_the_baseline(campus, tmp_path, monkeypatch, capsys):
    import dycl.data.synth as synth
    import dycl.train.config as train

    monkeypatch.setenv("DYCL_CACHE", str(tmp_path / "cache"))
    tiny = {"train_buildings": 8, "test_buildings": 6, "drone_views": 4, "image_size": 32, "seed": 0}
    monkeypatch.setattr(synth, "DEMO_DEFAULTS", tiny)
    monkeypatch.setattr(train, "DEMO_TRAINING", {**train.DEMO_TRAINING, "image_size": 32, "batch_size": 8,
                                                 "epochs": 1, "max_steps_per_epoch": 1, "workers": 0})
    out = tmp_path / "demo"
    assert run_cli("--demo", "--output", out, "--no-progress") == 0
    text = capsys.readouterr().out
    assert "random embeddings" in text and text.count("Table III") == 2
    cached = train.demo_data_dir()
    assert cached.parent == tmp_path / "cache" and (cached / "satellite" / "train.txt").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["demo"] and config["backbone"] == "resnet18" and not config["pretrained"]
    stamp = (cached / "satellite" / "train.txt").stat().st_mtime_ns
    assert run_cli("--demo", "--output", out, "--no-progress", "--overwrite") == 0
    assert (cached / "satellite" / "train.txt").stat().st_mtime_ns == stamp  # reused, not regenerated
