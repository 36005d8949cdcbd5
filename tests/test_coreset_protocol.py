"""A coreset's student protocol: SGD with one lr per parameter group (evaluate.coreset_lr_groups)."""
import dataclasses

import pytest
import torch

from mdw.config import ConfigError, EvalConfig, ModelConfig, RunConfig
from mdw.distill.synset import GROUPS, param_group
from mdw.evaluate.methods import coreset_alpha, protocol_text
from mdw.evaluate.students import StudentData, _optimizer, student_alpha, train_student
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


# ----- evaluate.alpha_scale: a distilled set's students at a multiple of the learned α ------------------

def _tiny_set(alpha, learned=True):
    gen = torch.Generator().manual_seed(0)
    return StudentData(torch.rand(4, 3, 32, 32, generator=gen), torch.randn(4, 384, generator=gen), torch.eye(4),
                       alpha=torch.tensor(alpha), learned_alpha=learned)


def test_alpha_scale_multiplies_a_distilled_sets_alpha_and_leaves_a_coresets_alone():
    ev = dataclasses.replace(EvalConfig(), alpha_scale=5.0)
    model = build_model(ModelConfig(), 32, seed=0)
    distilled, coreset = _tiny_set([0.02, 0.01, 0.004]), _tiny_set([0.1, 0.1, 0.1], learned=False)
    assert student_alpha(distilled, ev).tolist() == pytest.approx([0.1, 0.05, 0.02])
    assert student_alpha(coreset, ev).tolist() == pytest.approx([0.1, 0.1, 0.1])
    lr_of = {id(p): g["lr"] for g in _optimizer(model, distilled, ev).param_groups for p in g["params"]}
    for n, p in model.trainable_parameters():
        assert lr_of[id(p)] == pytest.approx(5.0 * [0.02, 0.01, 0.004][GROUPS.index(param_group(n))]), n
    assert protocol_text(distilled, ev) == "SGD, learned α 0.02 / 0.01 / 0.004 (visual/text/logit_scale) × 5"
    assert protocol_text(coreset, ev) == "SGD, lr 0.1 / 0.1 / 0.1 (visual/text/logit_scale)"
    assert protocol_text(distilled, EvalConfig()) == "SGD, learned α 0.02 / 0.01 / 0.004 (visual/text/logit_scale)"


def test_a_scaled_student_is_the_student_of_a_set_whose_alpha_was_scaled():
    """Training at alpha_scale × α is training a set that learned k·α: same seed, same parameters."""
    ev = dataclasses.replace(EvalConfig(), steps=5, alpha_scale=3.0)
    a = train_student(_tiny_set([0.02, 0.01, 0.004]), ModelConfig(), 32, ev, seed=1)
    b = train_student(_tiny_set([0.06, 0.03, 0.012]), ModelConfig(), 32, dataclasses.replace(ev, alpha_scale=1.0), seed=1)
    c = train_student(_tiny_set([0.02, 0.01, 0.004]), ModelConfig(), 32, dataclasses.replace(ev, alpha_scale=1.0), seed=1)
    assert torch.allclose(a.flat_params(), b.flat_params(), atol=1e-6)
    assert not torch.allclose(a.flat_params(), c.flat_params(), atol=1e-4)


@pytest.mark.parametrize("bad", [0, -1.0])
def test_bad_alpha_scale_is_named(bad):
    with pytest.raises(ConfigError, match="evaluate.alpha_scale"):
        RunConfig.from_dict({"evaluate": {"alpha_scale": bad}})
