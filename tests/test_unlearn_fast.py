"""The fast unlearning path (prepared data, θ0 evaluated once, fused GELU, worker processes, resume)
gives the influences of the straightforward loop ``unlearn.unlearn``, for every unlearning optimizer."""

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from untrac.cache import Cache
from untrac.config import MethodConfig, ModelConfig, OptimConfig, UnlearnConfig
from untrac.data.collate import encode_pairs
from untrac.data.synthetic import generate
from untrac.losses import dataset_loss
from untrac.methods import Context
from untrac.methods.untrac import loss_changes, score_untrac, score_untrac_inv
from untrac.models import build_model, load_tokenizer
from untrac.optim_config import OPTIMIZERS as SCHEMAS
from untrac.pieces import PieceStore
from untrac.prepared import EvalBatches, fused_activations
from untrac.unlearn import UnlearnPlan, unlearn

CONF = Path(__file__).resolve().parents[1] / "conf" / "optim"
OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam", "adafactor")
CPU = torch.device("cpu")
N = 6


def shipped(name: str) -> OptimConfig:
    """The optimizer exactly as ``optim=<name>`` configures it (conf/optim/<name>.yaml)."""
    values = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    return SCHEMAS[name](**{k: v for k, v in values.items() if k != "defaults"})


@pytest.fixture(scope="module")
def setup():
    cfg = ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32)
    tok = load_tokenizer(cfg)
    model, arch = build_model(cfg, tok, seed=0)
    data = generate("A", 0, n=2 * N)
    train = {z: encode_pairs(tok, pairs[:N], arch) for z, pairs in list(data.train.items())[:3]}
    test = {"early": encode_pairs(tok, data.test["test"][:N], arch),
            "late": encode_pairs(tok, data.test["test"][N:2 * N], arch)}
    inputs = Context(theta0=model.double().eval(), arch=arch, device=CPU, train=train, test=test,
                         method=MethodConfig(), optim=OptimConfig(), unlearn=UnlearnConfig(eval_every=2, workers="1"),
                         seed=0)
    return inputs


def reference(inputs: Context, forget_sets: dict, eval_sets: dict) -> dict:
    """The straightforward loop: a fresh θ0 per set, ``unlearn`` on the datasets themselves."""
    out, plan = {}, UnlearnPlan(arch=inputs.arch, device=CPU, optim=inputs.optim,
                                 schedule=inputs.unlearn, seed=inputs.seed)
    for name, forget in forget_sets.items():
        traj = unlearn(copy.deepcopy(inputs.theta0), forget, eval_sets, plan)
        for r in loss_changes(traj).itertuples():
            out[(name, r.name, r.step)] = r.influence
    return out


def as_dict(frame, forgotten: str, evaluated: str) -> dict:
    return {(getattr(r, forgotten), getattr(r, evaluated), r.step): r.influence for r in frame.itertuples()}


def assert_close(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    keys = sorted(expected)
    a, b = torch.tensor([got[k] for k in keys]), torch.tensor([expected[k] for k in keys])
    assert b.abs().max() > 0  # the ascent moved the losses: the comparison means something
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_untrac_fast_path_equals_the_straightforward_loop(setup, optimizer):
    inputs = dataclasses.replace(setup, optim=shipped(optimizer), counters={})
    got = as_dict(score_untrac(inputs), "train_dataset", "test_subset")
    assert_close(got, reference(inputs, inputs.train, inputs.test))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_untrac_inv_fast_path_equals_the_straightforward_loop(setup, optimizer):
    inputs = dataclasses.replace(setup, optim=shipped(optimizer), counters={},
                                 unlearn=UnlearnConfig(batch_size=256, epochs=3, eval_every=1, workers="1"))
    got = as_dict(score_untrac_inv(inputs), "test_subset", "train_dataset")
    assert_close(got, reference(inputs, inputs.test, inputs.train))


def test_prepared_evaluation_is_dataset_loss_bit_for_bit(setup):
    model, arch = setup.theta0, setup.arch
    for ds in setup.test.values():
        for batch_size in (1, 4, 64):
            assert EvalBatches.of(ds, arch, batch_size, CPU).loss(model, arch, CPU) == dataset_loss(
                model, ds, arch, CPU, batch_size)


def test_fused_gelu_is_the_same_function(setup):
    model, arch = setup.theta0, setup.arch
    fused = fused_activations(copy.deepcopy(model))
    assert any(type(m).__name__ == "GELUTanh" for m in fused.modules())
    for ds in setup.test.values():
        torch.testing.assert_close(dataset_loss(fused, ds, arch, CPU), dataset_loss(model, ds, arch, CPU),
                                   rtol=1e-13, atol=0)


@pytest.mark.slow  # 3-5 s
def test_worker_processes_give_the_sequential_numbers_exactly(setup):
    one = score_untrac(dataclasses.replace(setup, counters={}))
    counters = {}
    two = score_untrac(dataclasses.replace(setup, counters=counters,
                                           unlearn=dataclasses.replace(setup.unlearn, workers="2")))
    assert one.equals(two)
    assert counters["forward_backward"] == 3 * N


def test_finished_pieces_are_reused_not_redone(setup, tmp_path):
    store = PieceStore(Cache(tmp_path), {"theta0": "test"})
    first = score_untrac(dataclasses.replace(setup, counters={}, store=store))
    assert len(list((tmp_path / "pieces").iterdir())) == 3
    counters = {}
    again = score_untrac(dataclasses.replace(setup, counters=counters, store=store))
    assert again.equals(first) and counters["pieces_reused"] == 3
    # A different schedule is a different piece.
    changed = dataclasses.replace(setup, counters={}, store=store, unlearn=dataclasses.replace(setup.unlearn, eval_every=3))
    score_untrac(changed)
    assert len(list((tmp_path / "pieces").iterdir())) == 6
