"""The Table II baselines that own parameters train inside dycl-train: the instance loss's classifier with
the network's head, CSL's proxies on the proxy optimiser, with the training buildings' level table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dycl.data import open_train_test
from dycl.distributed import DistInfo
from dycl.train import Trainer, prepare_run

TINY = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "embedding_dim": 16, "batch_size": 8,
        "thresholds": (100.0, 200.0), "workers": 0, "lr": 1e-4, "epochs": 2, "progress": False}


def make_trainer(campus, tmp_path, **options) -> Trainer:
    config, _ = prepare_run({"data_dir": str(campus), "output": str(tmp_path / "run"), **TINY, **options})
    train, test = open_train_test(config.data_dir, config.dataset_format)
    return Trainer(config, train, test, DistInfo(0, 1, 0, torch.device("cpu")))


def test_instance_classifier_and_csl_proxies_train(campus, tmp_path):
    trainer = make_trainer(campus, tmp_path, loss="instance:1,csl:0.5")
    head = next(g for g in trainer.optimizer.param_groups if g["name"] == "head")
    classifier = trainer.loss.losses["instance"].classifier
    assert any(p is classifier.weight for p in head["params"]) and head["lr"] == pytest.approx(2e-4)
    csl = trainer.loss.losses["csl"]
    table = trainer.train_split.levels((100.0, 200.0))
    assert np.array_equal(csl.level_table.numpy(), table)
    assert trainer.proxy_optimizer is not None
    assert trainer.proxy_optimizer.param_groups[0]["params"] == [csl.proxies]
    before = (classifier.weight.detach().clone(), csl.proxies.detach().clone())
    batch = next(iter(trainer.epoch_loader(0)))
    loss = trainer.train_step(batch)
    assert torch.isfinite(loss) and set(trainer.loss.last_terms) == {"instance", "csl"}
    assert not torch.equal(before[0], classifier.weight) and not torch.equal(before[1], csl.proxies)
    # The checkpoint holds the classifier and the proxies, not the level table (data of the split).
    state = trainer.state_dict()["loss"]
    assert set(state) == {"losses.instance.classifier.weight", "losses.instance.classifier.bias",
                          "losses.csl.proxies"}


def test_bad_csl_options_fail_before_anything_is_written(campus, tmp_path):
    with pytest.raises(ValueError, match="loss_options: margins: need one finite margin per scale"):
        prepare_run({"data_dir": str(campus), "output": str(tmp_path / "bad"), **TINY, "loss": "csl",
                     "loss_options": {"csl": {"margins": [0.1]}}})
    assert not (tmp_path / "bad").exists()
