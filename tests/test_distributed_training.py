"""The trainer under two processes (gloo, CPU): the CUDA path's distributed fixes (issue 15).

One spawn of two ranks runs every scenario in turn and saves what it saw;
the tests then compare it with one process:

* the geo sampler's global batches are those of one process with the whole batch;
* the proxies' gradients are all-reduced: ranks whose proxy gradients differ still take the
  same step, a step makes no host-device sync (the gathers know their sizes), and proxies
  that differ anyway stop the checkpoint on every rank;
* evaluation is sharded: the gathered embeddings are one process's, and an unreadable image
  on one rank fails every rank at once instead of leaving them in a barrier;
* pretrained weights are fetched by the first process of the node before the others, and its
  failure fails the others without a download of their own.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from sync_counter import SyncCounter

from dycl.data import open_train_test
from dycl.distributed import DistInfo, PeerFailed, all_gather_no_grad, cleanup, init_distributed
from dycl.embed import embed_split
from dycl.train import TrainConfig, Trainer, validate_config

WORLD_SIZE = 2
BATCH = 8  # global batch (pairs)


def make_config(campus: str, output: str, **overrides) -> TrainConfig:
    values = {"data_dir": campus, "output": output, "backbone": "resnet18", "pretrained": False,
              "image_size": 32, "embedding_dim": 16, "batch_size": BATCH, "thresholds": (100.0, 200.0),
              "workers": 0, "progress": False, "epochs": 1, "eval_batch_size": 4}
    return validate_config(TrainConfig(**{**values, **overrides}))


def make_trainer(campus: str, out_dir: Path, dist: DistInfo, **overrides) -> Trainer:
    config = make_config(campus, str(out_dir / f"run{dist.rank}"), **overrides)
    train, test = open_train_test(config.data_dir)
    return Trainer(config, train, test, dist, resume_state=None)


def _error(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)}


# --------------------------------------------------------------------------- the scenarios (on each rank)


def _geo_batches(campus, out_dir, dist) -> dict:
    trainer = make_trainer(campus, out_dir, dist, sampler="geo")
    steps = []
    for batch in list(trainer.epoch_loader(1))[:3]:
        steps.append({"drone": all_gather_no_grad(batch[1].to(torch.int32), equal_sizes=True),
                      "labels": all_gather_no_grad(batch[2], equal_sizes=True)})
    return {"steps": steps}


def _proxies(campus, out_dir, dist) -> dict:
    trainer = make_trainer(campus, out_dir, dist)
    proxy = trainer.proxies[0]
    # Gradients that differ between ranks (as different GPUs' rounding could make them).
    proxy.register_hook(lambda grad: grad + 1e-3 * dist.rank)
    batch = next(iter(trainer.epoch_loader(0)))
    trainer.train_step(batch)
    with SyncCounter() as syncs:
        trainer.train_step(batch)
    result = {"proxies": all_gather_no_grad(proxy.detach()[None]), "syncs": dict(syncs.ops)}
    trainer.check_replicas()  # equal: no error
    if dist.rank == 1:
        with torch.no_grad():
            proxy.add_(1e-4)
    try:
        trainer.check_replicas()
        result["drifted"] = None
    except RuntimeError as exc:
        result["drifted"] = _error(exc)
    return result


def _evaluation(campus, out_dir, dist) -> dict:
    import dycl.data.datasets as datasets

    trainer = make_trainer(campus, out_dir, dist)
    results, sat, drone = trainer.evaluate()
    out = {"results": results, "sat": sat, "drone": drone, "model": trainer.model.state_dict()}
    real = datasets.load_image

    def unreadable(path):
        if dist.rank == 1 and "drone" in str(path):
            raise datasets.CorruptImageError(f"{path}: cannot decode image (test)")
        return real(path)

    datasets.load_image = unreadable
    start = time.monotonic()
    try:
        trainer.evaluate()
        out["failure"] = None
    except Exception as exc:  # noqa: BLE001 - what each rank raised is the result
        out["failure"] = _error(exc)
    finally:
        datasets.load_image = real
    out["failure_seconds"] = time.monotonic() - start
    return out


def _downloads(campus, out_dir, dist) -> dict:
    import dycl.models.backbones as backbones

    real = backbones._torchvision_resnet
    marker = out_dir / "downloaded"
    seen: list[bool] = []

    def download(name, pretrained):
        if pretrained:
            if dist.local_rank == 0:
                time.sleep(1.0)  # a slow download: the others must wait for it
                marker.write_text("weights")
            seen.append(marker.exists())
        return real(name, False)

    def failing(name, pretrained):
        seen.append(False)
        raise backbones.PretrainedWeightsUnavailable("could not obtain the pretrained weights (test)")

    backbones._torchvision_resnet = download
    try:
        make_trainer(campus, out_dir, dist, pretrained=True)
        first = list(seen)
        seen.clear()
        backbones._torchvision_resnet = failing if dist.rank == 0 else download
        try:
            make_trainer(campus, out_dir, dist, pretrained=True)
            failure = None
        except ValueError as exc:
            failure = _error(exc)
    finally:
        backbones._torchvision_resnet = real
    return {"first": first, "second_calls": len(seen), "failure": failure}


SCENARIOS = {"geo": _geo_batches, "proxies": _proxies, "evaluation": _evaluation, "downloads": _downloads}


def _worker(rank: int, port: int, campus: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = init_distributed(device="cpu", timeout_s=60)  # a hang fails in a minute, not 30
    results = {}
    try:
        for name, scenario in SCENARIOS.items():
            try:
                results[name] = scenario(campus, Path(out_dir), dist)
            except Exception:  # noqa: BLE001 - reported by the test, not here
                results[name] = {"crash": traceback.format_exc()}
                break
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(campus, tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp-train")
    context = mp.spawn(_worker, args=(_free_port(), str(campus), str(out_dir)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + 300
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail("the distributed scenarios did not finish in time")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def _scenario(ranks, name) -> list[dict]:
    for result in ranks:
        assert name in result and "crash" not in result[name], result.get(name, {}).get("crash")
    return [result[name] for result in ranks]


# --------------------------------------------------------------------------- the tests


def test_geo_batches_of_two_ranks_are_the_batches_of_one_process(ranks, campus, tmp_path):
    rank0, rank1 = _scenario(ranks, "geo")
    single = make_trainer(str(campus), tmp_path, DistInfo(0, 1, 0, torch.device("cpu")), sampler="geo")
    expected = list(single.epoch_loader(1))[:3]
    assert len(rank0["steps"]) == len(expected) == 3
    for got, other, batch in zip(rank0["steps"], rank1["steps"], expected, strict=True):
        assert torch.equal(got["labels"], other["labels"])  # every rank sees the global batch
        assert torch.equal(got["labels"], batch[2])  # ... and it is one process's batch
        assert torch.equal(got["drone"], batch[1].to(torch.int32))  # same pairs, same augmentation


def test_proxy_gradients_are_averaged_and_checked_before_a_checkpoint(ranks):
    rank0, rank1 = _scenario(ranks, "proxies")
    assert torch.equal(rank0["proxies"][0], rank0["proxies"][1])  # the same step on both ranks
    assert rank0["syncs"] == {} and rank1["syncs"] == {}  # no size exchange, no value check
    for result in (rank0, rank1):
        assert result["drifted"]["type"] == "RuntimeError"
        message = result["drifted"]["message"]
        assert message.startswith("the clustering loss's proxies: differ between processes"), message
        assert "checkpoint is not written" in message


def test_sharded_evaluation_equals_one_process_and_fails_together(ranks, campus):
    rank0, rank1 = _scenario(ranks, "evaluation")
    assert rank1["results"] is None and rank0["results"] is not None
    model = make_trainer(str(campus), Path("/nonexistent"), DistInfo(0, 1, 0, torch.device("cpu"))).model
    model.load_state_dict(rank0["model"])
    train, test = open_train_test(str(campus))
    sat, drone = embed_split(model, test, 32, batch_size=4, progress=False)
    for result in (rank0, rank1):
        for view, alone in (("sat", sat), ("drone", drone)):
            got = torch.from_numpy(result[view])
            torch.testing.assert_close(got, torch.from_numpy(alone), rtol=0, atol=1e-5)
    assert set(rank0["results"]) == {"satellite->drone", "drone->satellite"}
    assert rank1["failure"]["type"] == "ValueError"
    assert "cannot decode image (test)" in rank1["failure"]["message"]
    assert rank0["failure"]["type"] == PeerFailed.__name__
    assert "another process failed while embedding the test split" in rank0["failure"]["message"]
    assert max(rank0["failure_seconds"], rank1["failure_seconds"]) < 30  # not the 60 s timeout


def test_pretrained_weights_are_fetched_by_the_first_process_first(ranks):
    rank0, rank1 = _scenario(ranks, "downloads")
    assert rank0["first"] == [True] and rank1["first"] == [True]  # rank 1 found rank 0's download
    assert rank0["failure"]["message"].startswith("could not obtain the pretrained weights")
    assert rank1["failure"]["message"].startswith("the first process of a node failed")
    assert rank0["second_calls"] == 1 and rank1["second_calls"] == 0  # rank 1 did not try on its own
