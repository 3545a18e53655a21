"""Two-process (gloo, CPU) check of the global-batch loss recipe in dycl.distributed.

Each rank embeds half of a batch with a DDP-wrapped network, gathers the
embeddings with gradients and the labels without, and computes the paper's
combined loss on the global batch. The loss, its terms and the gradients
(network parameters after DDP's averaging, building proxies) must equal a
single process computing the same loss on the whole batch.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dycl.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    cleanup,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
)
from dycl.losses import batch_levels, build_loss
from dycl.models import build_model, freeze_batchnorm

WORLD_SIZE = 2
BATCH = 8  # pairs in the global batch
BUILDINGS = 6
UNEVEN = (3, 5)  # rows per rank for the uneven all-gather check
GRAD_KEYS = ("fc.weight", "fc.bias", "backbone.0.weight", "backbone.7.1.conv2.weight")


def make_data():
    g = torch.Generator().manual_seed(123)
    table = torch.randint(0, 3, (BUILDINGS, BUILDINGS), generator=g)
    table = torch.triu(table, 1)
    table = table + table.t()
    table.fill_diagonal_(3)
    labels = torch.randint(0, BUILDINGS, (BATCH,), generator=g)
    satellite = torch.randn(BATCH, 3, 32, 32, generator=g)
    drone = torch.randn(BATCH, 3, 32, 32, generator=g)
    return table, labels, satellite, drone


def make_model_and_loss():
    torch.manual_seed(7)
    model = build_model("resnet18", embedding_dim=16, pretrained=False)
    freeze_batchnorm(model)  # per-rank batch statistics would otherwise differ from the global batch
    model.train()
    loss = build_loss("dycl:0.2,cluster:0.1,happier:0.9", num_buildings=BUILDINGS, embedding_dim=16, levels=3)
    return model, loss


def global_step(model, loss, table, labels, satellite, drone, rows):
    """One step's loss and gradients; ``rows`` selects this process's part of the batch."""
    emb_a, emb_b = model(satellite[rows], drone[rows])
    emb_a, emb_b = all_gather_with_grad(emb_a), all_gather_with_grad(emb_b)
    labels_global = all_gather_no_grad(labels[rows])
    levels = batch_levels(table, labels_global, labels_global)
    total = loss(emb_a, emb_b, levels, labels_global, labels_global)
    total.backward()
    return total.detach(), labels_global


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed(device="cpu", timeout_s=120)
    try:
        table, labels, satellite, drone = make_data()
        model, loss = make_model_and_loss()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        half = BATCH // WORLD_SIZE
        total, labels_global = global_step(ddp, loss, table, labels, satellite, drone,
                                           slice(rank * half, (rank + 1) * half))
        params = dict(model.named_parameters())

        # Uneven shards: rows padded for the collective, trimmed after, gradients routed back.
        start = sum(UNEVEN[:rank])
        values = torch.arange(sum(UNEVEN), dtype=torch.float64).reshape(-1, 1) * torch.ones(1, 2)
        mine = values[start:start + UNEVEN[rank]].clone().requires_grad_(True)
        gathered = all_gather_with_grad(mine)
        weights = torch.linspace(1.0, 2.0, sum(UNEVEN), dtype=torch.float64)[:, None]
        (gathered * weights).sum().backward()

        torch.save({
            "info": (info.rank, info.world_size, info.is_main, info.distributed),
            "helpers": (get_rank(), get_world_size(), is_main_process(), is_distributed()),
            "total": total,
            "terms": {k: v.clone() for k, v in loss.last_terms.items()},
            "labels": labels_global,
            "grads": {k: params[k].grad.clone() for k in GRAD_KEYS},
            "proxy_grad": loss.proxy_parameters()[0].grad.clone(),
            "uneven_gathered": gathered.detach(),
            "uneven_grad": mine.grad.clone(),
        }, Path(out_dir) / f"rank{rank}.pt")
    finally:
        cleanup()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(out_dir: Path, timeout_s: float = 180.0) -> None:
    context = mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail("distributed workers did not finish in time")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    _spawn(out_dir)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def test_ranks_see_the_global_batch(rank_results):
    _, labels, _, _ = make_data()
    for rank, result in enumerate(rank_results):
        assert result["info"] == (rank, WORLD_SIZE, rank == 0, True)
        assert result["helpers"] == (rank, WORLD_SIZE, rank == 0, True)
        torch.testing.assert_close(result["labels"], labels)


def test_two_ranks_equal_one_process_on_the_full_batch(rank_results):
    table, labels, satellite, drone = make_data()
    model, loss = make_model_and_loss()
    total, _ = global_step(model, loss, table, labels, satellite, drone, slice(0, BATCH))
    params = dict(model.named_parameters())
    for result in rank_results:
        torch.testing.assert_close(result["total"], total, rtol=1e-5, atol=1e-6)
        assert set(result["terms"]) == {"dycl", "cluster", "happier"}
        for name, value in loss.last_terms.items():
            torch.testing.assert_close(result["terms"][name], value, rtol=1e-5, atol=1e-6)
        # DDP averages parameter gradients over ranks; the all-gather backward sums over ranks.
        for key in GRAD_KEYS:
            torch.testing.assert_close(result["grads"][key], params[key].grad, rtol=1e-4, atol=1e-6)
        # Proxies live outside DDP and see only gathered tensors: the full-batch gradient on every rank.
        proxy_grad = loss.proxy_parameters()[0].grad
        torch.testing.assert_close(result["proxy_grad"], proxy_grad, rtol=1e-4, atol=1e-7)
    assert float(params["fc.weight"].grad.abs().max()) > 0


def test_uneven_all_gather_keeps_order_and_gradients(rank_results):
    values = torch.arange(sum(UNEVEN), dtype=torch.float64).reshape(-1, 1) * torch.ones(1, 2)
    weights = torch.linspace(1.0, 2.0, sum(UNEVEN), dtype=torch.float64)[:, None]
    for rank, result in enumerate(rank_results):
        torch.testing.assert_close(result["uneven_gathered"], values)
        start = sum(UNEVEN[:rank])
        # Every rank back-propagates the same function: each row's gradient is summed over ranks.
        expected = (WORLD_SIZE * weights[start:start + UNEVEN[rank]]).expand(-1, 2)
        torch.testing.assert_close(result["uneven_grad"], expected)


def test_single_process_fallbacks():
    assert not is_distributed()
    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x and all_gather_no_grad(x) is x
    info = init_distributed(device="cpu")  # WORLD_SIZE unset: nothing to initialise
    assert (info.rank, info.world_size, info.is_main, info.distributed) == (0, 1, True, False)
    with pytest.raises(ValueError, match="device"):
        init_distributed(device="tpu")
