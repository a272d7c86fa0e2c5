import math

import pytest
import torch
from transformers import ByT5Tokenizer

from untrac.config import ModelConfig, OptimConfig, UnlearnConfig
from untrac.data.collate import encode_pairs
from untrac.losses import dataset_loss
from untrac.methods.untrac import loss_changes
from untrac.models import build_model
from untrac.unlearn import UnlearnPlan, num_steps, unlearn

TOK = ByT5Tokenizer()
CPU = torch.device("cpu")


@pytest.fixture
def tiny():
    model, arch = build_model(ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32), TOK, seed=0)
    forget = encode_pairs(TOK, [(f"count {i}", str(i + 1)) for i in range(6)], arch)
    test = encode_pairs(TOK, [(f"after {i}", str(i + 1)) for i in range(4)], arch)
    return model, arch, forget, test


def test_num_steps_epochs_batches_and_cap():
    assert num_steps(10, UnlearnConfig(batch_size=3, epochs=2)) == 8
    assert num_steps(10, UnlearnConfig(batch_size=3, epochs=2, max_steps=5)) == 5
    assert num_steps(10, UnlearnConfig(batch_size=256, epochs=5)) == 5  # a batch larger than the set = full batch


def test_ascent_raises_the_loss_of_the_forgotten_set(tiny):
    model, arch, forget, test = tiny
    before = dataset_loss(model, forget, arch, CPU)
    plan = UnlearnPlan(arch=arch, device=CPU, optim=OptimConfig(lr=1e-2),
                       schedule=UnlearnConfig(batch_size=2, epochs=2, eval_every=2), seed=0)
    traj = unlearn(model, forget, {"forget": forget, "test": test}, plan)
    frame = traj.frame()
    assert sorted(frame.step.unique()) == [0, 2, 4, 6]
    assert frame[frame.step == 0].set_index("name").loss["forget"] == pytest.approx(before)
    assert frame[frame.step == 6].set_index("name").loss["forget"] > before
    influence = loss_changes(traj)
    assert influence[influence.step == 0].influence.eq(0).all()
    assert influence[influence.is_final].step.unique().tolist() == [6]


def test_non_finite_loss_is_recorded_and_final_influence_is_nan(tiny):
    model, arch, forget, test = tiny
    # An absurd SGD step sends the weights to inf; the run must stop and say so.
    plan = UnlearnPlan(arch=arch, device=CPU, optim=OptimConfig(name="sgd", lr=1e30),
                       schedule=UnlearnConfig(batch_size=1, epochs=3, eval_every=1), seed=0)
    traj = unlearn(model, forget, {"test": test}, plan)
    assert traj.nonfinite_step is not None and traj.nonfinite_step < 18
    final = loss_changes(traj)
    assert final[final.is_final].influence.map(math.isnan).all()
