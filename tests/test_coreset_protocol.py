"""A coreset's student protocol: SGD with one lr per parameter group (evaluate.coreset_lr_groups)."""
import dataclasses

import pytest
import torch

from mdw.config import ConfigError, EvalConfig, ModelConfig, RunConfig
from mdw.distill.synset import GROUPS, param_group
from mdw.evaluate.methods import coreset_alpha, protocol_text
from mdw.evaluate.students import StudentData, _optimizer
from mdw.models.presets import build_model


def test_per_group_lrs_reach_each_groups_parameters():
    cfg = RunConfig.from_dict({"evaluate": {"coreset_lr_groups": [0.05, 0.3, 1.0]}})
    alpha = coreset_alpha(cfg)
    assert alpha.tolist() == pytest.approx([0.05, 0.3, 1.0])
    data = StudentData(torch.zeros(2, 3, 32, 32), torch.zeros(2, 384), torch.eye(2), alpha=alpha)
    assert protocol_text(data, cfg.evaluate) == "SGD, lr 0.05 / 0.3 / 1 (visual/text/logit_scale)"
    model = build_model(ModelConfig(), 32, seed=0)
    opt = _optimizer(model, data, cfg.evaluate)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = model.trainable_parameters()
    assert {param_group(n) for n, _ in named} == set(GROUPS)
    for n, p in named:
        assert lr_of[id(p)] == pytest.approx(float(alpha[GROUPS.index(param_group(n))])), n


def test_without_groups_every_group_takes_coreset_lr_or_the_experts_lr():
    assert coreset_alpha(RunConfig()).tolist() == pytest.approx([0.1] * 3)
    cfg = RunConfig.from_dict({"evaluate": {"coreset_lr": 0}, "experts": {"lr": 0.02}})
    assert coreset_alpha(cfg).tolist() == pytest.approx([0.02] * 3)


@pytest.mark.parametrize("bad", [[0.1, 0.1], [0.1, 0.0, 0.1], ["x", 1, 1], [0.1, 0.1, 0.1, 0.1]])
def test_bad_group_lrs_are_named(bad):
    with pytest.raises(ConfigError, match="evaluate.coreset_lr_groups"):
        RunConfig.from_dict({"evaluate": {"coreset_lr_groups": bad}})


def test_group_lrs_from_the_command_line_are_numbers():
    ev = dataclasses.replace(EvalConfig(), coreset_lr_groups=["0.1", "0.3", "0.3"])
    ev.validate()
    assert ev.coreset_lr_groups == [0.1, 0.3, 0.3]
