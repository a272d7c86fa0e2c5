import json

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

import datasets
from untrac.cache import make_key
from untrac.errors import UntracError
from untrac.models import Arch
from untrac.train import TrainRun, sample_order, steps_for, train


def _stream_by_hand(pool_size: int, draws: int, seed: int) -> list[int]:
    """The documented order: a seeded generator, one fresh permutation per pass over the pool."""
    gen, stream = torch.Generator().manual_seed(seed), []
    while len(stream) < draws:
        stream += torch.randperm(pool_size, generator=gen).tolist()
    return stream[:draws]


def test_sample_order_is_consecutive_permutations_cut_into_batches():
    batches = list(sample_order(pool_size=10, steps=7, batch_size=4, seed=3))
    assert len(batches) == 7 and all(len(b) == 4 for b in batches)
    flat = [i for b in batches for i in b]
    assert flat == _stream_by_hand(10, 28, seed=3)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert len(set(flat[20:])) == 8  # the third, unfinished pass repeats no example
    # Batch 3 holds draws 8..11: the last two of pass 1, then the first two of a reshuffled pass 2.
    assert batches[2] == flat[8:10] + flat[10:12]
    assert flat[:10] != flat[10:20]  # each pass reshuffles


def test_sample_order_depends_on_its_seed_only():
    torch.manual_seed(0)
    first = list(sample_order(10, 5, 4, seed=3))
    torch.manual_seed(1)  # the global RNG must not matter: θ0 and θ−Z reproduce their streams
    assert list(sample_order(10, 5, 4, seed=3)) == first
    assert list(sample_order(10, 5, 4, seed=4)) != first


def test_sample_order_batch_larger_than_the_pool_spans_passes():
    (batch,) = sample_order(pool_size=3, steps=1, batch_size=7, seed=0)
    assert len(batch) == 7 and sorted(batch[:3]) == sorted(batch[3:6]) == [0, 1, 2]


def test_steps_for_modes():
    assert steps_for(1000, 8, fixed_steps=200, epochs=1, mode="fixed_steps") == 200
    assert steps_for(1000, 8, fixed_steps=200, epochs=2, mode="all_examples") == 250
    assert steps_for(1001, 8, fixed_steps=200, epochs=1, mode="all_examples") == 126  # last batch partial


def _one_step(clip_grad):
    """One SGD step (lr 1) of a tiny OPT on two equal-length blocks; returns the update and the
    gradient computed independently with the model's own loss."""
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, ffn_dim=16,
                                     num_attention_heads=2, max_position_embeddings=16, word_embed_proj_dim=8,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2, dropout=0.0))
    ids = torch.randint(3, 40, (2, 12))
    pool = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
    before = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()  # equal lengths: token mean = mean of example means
    grad = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad()
    arch = Arch(kind="causal", pad_id=0, eos_id=2, max_length=16)
    train(model, arch, pool, torch.optim.SGD(model.parameters(), lr=1.0), torch.device("cpu"),
          TrainRun(steps=1, batch_size=2, seed=0, clip_grad=clip_grad))
    update = [b - p.detach() for b, p in zip(before, model.parameters())]
    return update, grad


def _norm(tensors) -> float:
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)).item()


@pytest.mark.parametrize("clip_grad", [None, 1e-3])
def test_train_clips_the_global_gradient_norm(clip_grad):
    update, grad = _one_step(clip_grad)
    norm = _norm(grad)
    assert norm > 1e-2  # so that a 1e-3 clip bites
    scale = 1.0 if clip_grad is None else clip_grad / norm
    for u, g in zip(update, grad):
        torch.testing.assert_close(u, scale * g, rtol=1e-4, atol=1e-7)
    if clip_grad is not None:
        assert _norm(update) == pytest.approx(clip_grad, rel=1e-4)


def test_a_diverging_run_stops_at_once_with_one_line():
    """Issue 17: train.lr=1e30 gave exit 0 and NaN everywhere; now the first non-finite loss stops it."""
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, ffn_dim=16,
                                     num_attention_heads=2, max_position_embeddings=16, word_embed_proj_dim=8,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2, dropout=0.0))
    pool = datasets.Dataset.from_dict({"input_ids": torch.randint(3, 40, (4, 12)).tolist()})
    arch = Arch(kind="causal", pad_id=0, eos_id=2, max_length=16)
    with pytest.raises(UntracError, match=r"^training θ0 \(seed 0\) diverged at step \d+: loss (nan|inf); "
                                          r"lower train.lr$") as err:
        train(model, arch, pool, torch.optim.SGD(model.parameters(), lr=1e30), torch.device("cpu"),
              TrainRun(steps=50, batch_size=2, seed=0, name="θ0 (seed 0)"))
    assert int(err.value.args[0].split("step ")[1].split(":")[0]) < 50  # stopped early, not at the end


def _experiment(tmp_path, **train):
    from untrac.config import Config, DataConfig, ModelConfig, TrainConfig
    from untrac.pipeline import Experiment

    return Experiment(Config(model=ModelConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32),
                             data=DataConfig(n_per_dataset=8), cache_dir=str(tmp_path),
                             train=TrainConfig(steps=4, batch_size=4, checkpoint_every=1, **train)))


def test_a_diverged_model_is_not_cached(tmp_path):
    """Neither the model nor its checkpoints nor their staging folder are left in the cache."""
    with pytest.raises(UntracError, match=r"^training θ−dataset1 \(seed 0\) diverged at step [1-4]: "):
        _experiment(tmp_path, lr=1e30).trained(0, exclude="dataset1", checkpoints=True)
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
    assert not (tmp_path / "checkpoints").exists() and not list((tmp_path / "staging").iterdir())


def test_checkpoints_left_by_a_killed_run_are_removed(tmp_path):
    """The staging folder is used only under the model's lock: whatever the next trainer finds there is stale."""
    experiment = _experiment(tmp_path)
    key = make_key(experiment.spec(0, None).checkpoint_fields())
    for name in (key, f"{key}-4242"):  # this version's name, and an older version's (pid appended)
        (tmp_path / "staging" / name).mkdir(parents=True)
        (tmp_path / "staging" / name / "step0000009.safetensors").write_text("half")
    experiment.trained(0, checkpoints=True)
    assert list((tmp_path / "staging").iterdir()) == []
    assert len(json.loads((experiment.cache.path("checkpoints", key) / "checkpoints.json").read_text())) == 4


def test_an_infinite_train_lr_is_a_config_error():
    from untrac.config import TrainConfig

    with pytest.raises(UntracError, match="^train.lr must be finite, got inf$"):
        TrainConfig(lr=float("inf"))
