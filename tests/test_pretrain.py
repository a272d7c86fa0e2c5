"""untrac.pretrain and its entry in the model store: the pretrained stand-in (``model=t5_standin``).

A stand-in small enough to pretrain in seconds (d_model 32, 60 steps) stands for the preset's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from untrac.cache import Cache, load_weights
from untrac.checks import typed
import untrac.data.standin as standin_data
from untrac.data.standin import CorpusSpec, corpus
from untrac.models import build_model, load_tokenizer
from untrac.pretrain_config import PretrainConfig
from untrac.pretrain import corpus_spec, knowledge, lr_factor, probes
from untrac.store import ModelStore
from untrac.train import TrainRun, train

SMALL = ("model=t5_standin", "model.d_model=32", "model.d_ff=64", "model.pretrain.steps=60",
         "model.pretrain.pairs=2000", "model.pretrain.batch_size=16", "model.pretrain.warmup=10")


def test_lr_factor_warms_up_then_decays_to_its_floor():
    f = lr_factor(PretrainConfig(steps=10, warmup=4, min_lr_frac=0.1))
    # by hand: min(1, (s+1)/4) * max(0.1, 1 - 0.9 s/10)
    assert [round(f(s), 6) for s in (0, 1, 3, 9, 20)] == [0.25, 0.5 * 0.91, 0.73, 0.19, 0.1]


def test_train_follows_the_schedule_and_stays_constant_without_one(tiny_seq2seq_pool):
    model, arch, pool, _ = tiny_seq2seq_pool
    for factor, want in ((lambda s: 0.5 ** s, 0.5 ** 3), (None, 1.0)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train(model, arch, pool, opt, torch.device("cpu"), TrainRun(3, 2, 0, lr_factor=factor))
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * want)


@pytest.fixture
def tiny_seq2seq_pool(compose):
    from untrac.data.collate import encode_pairs

    cfg = typed(compose(*SMALL)).model
    tok = load_tokenizer(cfg)
    model, arch = build_model(cfg, tok, 0)
    return model, arch, encode_pairs(tok, corpus(CorpusSpec(pairs=16, n_max=99, held_out=0.1, seed=0)), arch), tok


def test_nothing_held_out_means_no_probe(tiny_seq2seq_pool):
    model, _, _, tok = tiny_seq2seq_pool
    assert knowledge(model, tok, PretrainConfig(held_out=0.0)) == {}
    assert set(knowledge(model, tok, PretrainConfig(n_max=20, held_out=0.2))) == set(probes(PretrainConfig()))


def test_probes_are_held_out_and_right():
    pre = PretrainConfig(pairs=20_000)
    prompts = {p for p, _ in corpus(corpus_spec(pre))}
    found = probes(pre)
    assert set(found) >= {"successor, numerals", "successor, words", "spelling"}
    assert len({len(pairs) for pairs in found.values()}) == 1 and len(found["spelling"]) in (99, 100)
    for name, pairs in found.items():
        if name != "spelling":  # spelling is stated for every number; succession of these never
            assert not prompts & {p for p, _ in pairs}
    assert all(int(t) == int(p.split()[0]) + 1 for p, t in found["successor, numerals"])


def test_the_store_pretrains_once_and_every_model_starts_from_it(compose, tmp_path, monkeypatch):
    cfg = typed(compose(*SMALL, f"cache_dir={tmp_path}")).model
    tok = load_tokenizer(cfg)
    store = ModelStore(Cache(tmp_path), torch.device("cpu"))
    entry = store.pretrained(cfg, tok)
    report = json.loads((entry / "pretrain.json").read_text())
    assert set(report["knowledge"]) == set(probes(cfg.pretrain)) and report["seconds"] > 0
    losses = json.loads((entry / "train_losses.json").read_text())
    assert len(losses) == 60 and sum(losses[-10:]) < sum(losses[:10])  # it learned something
    stand_in, _ = build_model(cfg, tok, 0)
    load_weights(stand_in, entry / "model.safetensors")
    random_init, _ = build_model(cfg, tok, 5)
    def again(*args):
        raise RuntimeError("pretrained twice")

    monkeypatch.setattr("untrac.pretrain.pretrain", again)
    for seed in (0, 5):  # the seed of a finetuning does not change where it starts
        fresh = store.fresh(cfg, tok, seed)
        for (name, a), b, c in zip(fresh.state_dict().items(), stand_in.state_dict().values(),
                                   random_init.state_dict().values()):
            assert torch.equal(a, b), name
        assert not all(torch.equal(b, c) for b, c in zip(stand_in.state_dict().values(),
                                                         random_init.state_dict().values()))
    other = typed(compose(*SMALL, "model.pretrain.seed=1", f"cache_dir={tmp_path}")).model
    with pytest.raises(RuntimeError, match="pretrained twice"):  # another recipe is another entry
        store.pretrained(other, tok)


def test_a_new_corpus_version_keys_a_new_stand_in_and_new_finetuned_models(compose, monkeypatch):
    """The generated text is code, not config: its version is in every key that depends on it (a
    stand-in pretrained on version 2's text once served version 3's finetuning from the cache)."""
    from untrac.cache import make_key
    from untrac.models import model_key
    from untrac.store import model_spec

    cfg = typed(compose(*SMALL))
    keys = lambda: (make_key({"model": model_key(cfg.model)}), model_spec(cfg, 0).key(),  # noqa: E731
                    model_spec(cfg, 0, "dataset1").key())
    before = keys()
    assert keys() == before  # the keys are a function of the config and the text
    monkeypatch.setattr("untrac.data.standin.CORPUS_VERSION", 99)
    after = keys()
    assert all(a != b for a, b in zip(before, after))
    words = standin_data.vocabulary()  # a word added to the word list (or a template) changes the vocabulary
    monkeypatch.setattr("untrac.data.standin.vocabulary", lambda: [*words, "zyzzyva"])
    assert all(a != b for a, b in zip(after, keys()))
    tiny = typed(compose())
    assert "corpus_version" not in model_key(tiny.model)  # models without a stand-in keep their keys


def test_the_stand_in_pretrains_on_one_thread_whatever_torch_was_given(compose, monkeypatch):
    """Its weights would otherwise depend on the machine's cores (a CPU matmul's sums follow its threads)."""
    from untrac import pretrain as pretrain_module

    cfg = typed(compose(*SMALL)).model
    seen = []
    monkeypatch.setattr(pretrain_module, "train", lambda *a, **k: seen.append(torch.get_num_threads()) or [])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pretrain_module.pretrain(cfg, load_tokenizer(cfg), torch.device("cpu"))
        assert seen == [1] and torch.get_num_threads() == 2  # one thread inside, the caller's after
    finally:
        torch.set_num_threads(before)


def test_the_standin_script_reports_its_progress_off_a_terminal(tmp_path):
    """``make standin`` into a log file (CI, a cluster job) logs the pretraining loop, not silence."""
    root = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "src"), "UNTRAC_PROGRESS_EVERY": "0"}
    done = subprocess.run([sys.executable, str(root / "scripts" / "standin.py"), *SMALL[1:], f"cache_dir={tmp_path}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pretrain stand-in: at 1/60" in done.stderr
    assert "untrac.store" in done.stderr
