import pytest
import torch

from untrac.config import ModelConfig
from untrac.errors import UntracError
from untrac.models import autocast, build_model, load_tokenizer, resolve_device


def test_tiny_presets_build_offline_and_are_seeded():
    for arch in ("seq2seq", "causal"):
        cfg = ModelConfig(arch=arch, d_model=16, num_layers=1, num_heads=2, d_ff=32)
        tokenizer = load_tokenizer(cfg)
        a, info = build_model(cfg, tokenizer, seed=3)
        b, _ = build_model(cfg, tokenizer, seed=3)
        c, _ = build_model(cfg, tokenizer, seed=4)
        first = next(a.parameters())
        assert torch.equal(first, next(b.parameters())) and not torch.equal(first, next(c.parameters()))
        assert info.kind == arch and info.pad_id == 0 and info.eos_id == 1


def test_unreachable_model_id_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = ModelConfig(name="opt125m", arch="causal", name_or_path="facebook/not-a-model-here",
                      tokenizer="facebook/not-a-tokenizer-here")  # the same name blames the model (test below)
    with pytest.raises(UntracError, match=r"model\.tokenizer=<local directory"):
        load_tokenizer(cfg)


def test_device_auto_and_cpu_autocast_is_a_no_op():
    device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UntracError, match="CUDA"):
            resolve_device("cuda")
    with autocast(torch.device("cpu"), "bfloat16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


# -- model=local: your own checkpoint folder -----------------------------------------------------

def _tiny_checkpoint(folder, kind: str, dtype=torch.float32, vocab: int | None = None):
    """A random tiny causal (GPT-2, or Llama) or seq2seq (T5) model and ByT5's tokenizer, saved as a user would."""
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()
    vocab = vocab or len(tokenizer)
    torch.manual_seed(0)
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                             bos_token_id=1, eos_token_id=1, pad_token_id=0))
    elif kind == "causal":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=16, n_layer=1, n_head=2, n_positions=64,
                                           bos_token_id=1, eos_token_id=1, pad_token_id=0))
    else:
        model = T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                    num_heads=2, decoder_start_token_id=0))
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def local(folder, tokenizer=None) -> ModelConfig:
    return ModelConfig(name="local", arch="auto", name_or_path=str(folder), tokenizer=tokenizer or str(folder))


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_local_checkpoint_loads_with_its_weights_and_kind(tmp_path, kind):
    saved = _tiny_checkpoint(tmp_path, kind)
    cfg = local(tmp_path)
    tokenizer = load_tokenizer(cfg)
    model, arch = build_model(cfg, tokenizer, seed=5)
    assert arch.kind == kind and arch.eos_id == 1 and arch.pad_id == 0
    assert arch.max_length == (64 if kind == "causal" else cfg.max_positions)  # T5 has no position limit
    state = model.state_dict()
    assert set(saved) <= set(state) and all(torch.equal(state[k], v) for k, v in saved.items())


def test_bf16_checkpoint_is_upcast_exactly(tmp_path):
    saved = _tiny_checkpoint(tmp_path, "causal", dtype=torch.bfloat16)
    model, _ = build_model(local(tmp_path), load_tokenizer(local(tmp_path)), seed=0)
    weight = model.state_dict()["transformer.wte.weight"]
    assert weight.dtype == torch.float32 and torch.equal(weight, saved["transformer.wte.weight"].float())


def test_resaved_checkpoint_changes_the_cache_key(tmp_path):
    import os

    from untrac.models import model_key

    _tiny_checkpoint(tmp_path, "causal")
    before = model_key(local(tmp_path))
    os.utime(tmp_path / "model.safetensors", ns=(1, 1))
    assert model_key(local(tmp_path)) != before
    assert "checkpoint" not in model_key(ModelConfig())  # tiny presets keep the keys they had


def test_bad_checkpoint_folders_are_one_line_naming_them(tmp_path):
    from transformers import ByT5Tokenizer, ViTConfig

    with pytest.raises(UntracError, match=f"model.name_or_path={tmp_path / 'nowhere'}: no such folder"):
        build_model(local(tmp_path / "nowhere", tokenizer="byt5"), ByT5Tokenizer(), 0)
    ByT5Tokenizer().save_pretrained(tmp_path / "tok_only")
    with pytest.raises(UntracError, match=f"{tmp_path / 'tok_only'}: the folder has no config.json"):
        build_model(local(tmp_path / "tok_only"), ByT5Tokenizer(), 0)
    ViTConfig().save_pretrained(tmp_path / "vit")
    with pytest.raises(UntracError, match="model_type 'vit' is not a causal language model"):
        build_model(local(tmp_path / "vit", tokenizer="byt5"), ByT5Tokenizer(), 0)
    _tiny_checkpoint(tmp_path / "small", "causal", vocab=100)
    with pytest.raises(UntracError, match="has 384 tokens but the model .* embeds 100"):
        build_model(local(tmp_path / "small"), ByT5Tokenizer(), 0)


def test_tokenizer_that_cannot_be_loaded_names_the_folder(tmp_path):
    _tiny_checkpoint(tmp_path, "causal")
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(UntracError, match=f"model.tokenizer={tmp_path}: cannot load a tokenizer") as err:
        load_tokenizer(local(tmp_path))
    assert "\n" not in str(err.value)


def _checkpoint_experiment(tmp_path, rows: int):
    """``model=local`` on a saved tiny GPT-2, θ0 as saved, two JSONL datasets of ``rows`` pairs; no
    ground truth. Returns (the experiment, the saved state dict)."""
    import json

    from untrac.config import Config, DataConfig, GroundTruthConfig, TestsetConfig as SubsetsConfig, TrainConfig
    from untrac.pipeline import Experiment

    saved = _tiny_checkpoint(tmp_path / "ckpt", "causal")
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": f"{name}{i} ", "target": "x"}) + "\n"
                                                        for i in range(rows)))
    cfg = Config(model=local(tmp_path / "ckpt"), train=TrainConfig(steps=0, batch_size=2),
                 data=DataConfig(name="files", kind="files",
                                 train={"a": str(tmp_path / "a.jsonl"), "b": str(tmp_path / "b.jsonl")}),
                 testset=SubsetsConfig(name="files", subsets={"t": str(tmp_path / "a.jsonl")}),
                 device="cpu", cache_dir=str(tmp_path / "cache"), groundtruth=GroundTruthConfig(mode="none"))
    return Experiment(cfg), saved


def test_steps_zero_makes_the_checkpoint_theta0_and_refuses_theta_minus_z(tmp_path):
    exp, saved = _checkpoint_experiment(tmp_path, rows=6)
    state = exp.trained(seed=0).state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert not (tmp_path / "cache" / "models").exists()  # nothing trained, nothing copied
    with pytest.raises(UntracError, match=r"train\.steps=0 trains nothing.*groundtruth\.mode=none"):
        exp.trained(seed=0, exclude="a")


# -- issue 17: a checkpoint that would give a silent wrong answer is refused in one line -------------

@pytest.mark.parametrize("kind", ["causal", "seq2seq", "llama"])
def test_checkpoint_without_tokenizer_files_names_the_folder(tmp_path, kind):
    """transformers builds an empty tokenizer from such a folder (T5: every text → special ids; GPT-2: [])."""
    _tiny_checkpoint(tmp_path, kind)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(UntracError, match=rf"^model\.name_or_path={tmp_path} has no tokenizer files \(tokenizer\.json, "
                                          r".*tokenizer\.save_pretrained.*model\.tokenizer=<dir>\|byt5$"):
        load_tokenizer(local(tmp_path))
    assert load_tokenizer(local(tmp_path, tokenizer="byt5")).eos_token_id == 1  # the way out works
    (tmp_path / "tok").mkdir()
    with pytest.raises(UntracError, match=rf"^model\.tokenizer={tmp_path / 'tok'} has no tokenizer files"):
        load_tokenizer(local(tmp_path, tokenizer=str(tmp_path / "tok")))


def test_tokenizer_that_encodes_no_ordinary_token_is_refused(tmp_path):
    """A config-only tokenizer folder passes the file check but still gives an empty tokenizer."""
    from transformers import GPT2Config

    GPT2Config(vocab_size=384, n_embd=16, n_layer=1, n_head=2).save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "tokenizer_config.json").write_text('{"tokenizer_class": "GPT2Tokenizer", "eos_token": "x"}')
    with pytest.raises(UntracError, match=r"model\.name_or_path=.*encodes text to no ordinary token"):
        load_tokenizer(local(tmp_path / "model"))


def test_tokenizer_larger_than_the_embedding_names_model_tokenizer(tmp_path):
    _tiny_checkpoint(tmp_path / "small", "causal", vocab=100)
    cfg = local(tmp_path / "small")
    with pytest.raises(UntracError, match=rf"^model\.tokenizer={tmp_path / 'small'} has 384 tokens but .* embeds 100"):
        build_model(cfg, load_tokenizer(cfg), 0)


@pytest.mark.parametrize("arch", ["auto", "causal"])
@pytest.mark.parametrize("typo", ["./my_ckpt", "ckpts/run1/final", "~/ckpt", "/nowhere/ckpt"])
def test_model_path_typo_names_model_name_or_path_not_the_tokenizer(tmp_path, monkeypatch, arch, typo):
    monkeypatch.chdir(tmp_path)
    cfg = ModelConfig(name="x", arch=arch, name_or_path=typo, tokenizer=None)
    with pytest.raises(UntracError, match=rf"^model\.name_or_path={typo}: no such folder") as err:
        load_tokenizer(cfg)
    assert "tokenizer" not in str(err.value)


def test_hub_like_model_name_offline_names_model_name_or_path(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = ModelConfig(name="x", arch="causal", name_or_path="someone/not-here-model", tokenizer=None)
    with pytest.raises(UntracError, match=r"cannot load model 'someone/not-here-model'.*set model\.name_or_path="):
        load_tokenizer(cfg)


@pytest.mark.parametrize("arch", ["auto", "causal", "seq2seq"])
@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_remote_code_checkpoint_is_refused_before_transformers_reads_it(tmp_path, monkeypatch, arch, where):
    """model=local, opt125m (causal) and t5xl (seq2seq) pointed at a folder with auto_map: one line, no
    prompt (stdin would answer 'y'), and no transformers loader is even called."""
    import io
    import json

    import transformers
    from transformers import ByT5Tokenizer

    _tiny_checkpoint(tmp_path, "causal")
    data = json.loads((tmp_path / where).read_text())
    (tmp_path / where).write_text(json.dumps({**data, "auto_map": {"AutoConfig": "evil.EvilConfig"}}))
    (tmp_path / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n" * 10))

    def forbidden(*args, **kwargs):
        raise AssertionError("transformers was asked to load the folder")

    for auto in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM"):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", forbidden)
    cfg = ModelConfig(name="x", arch=arch, name_or_path=str(tmp_path), tokenizer=None)
    message = rf"^model\.name_or_path={tmp_path}: {where} has auto_map .* never runs \(trust_remote_code=False\)"
    with pytest.raises(UntracError, match=message):
        load_tokenizer(cfg)
    with pytest.raises(UntracError, match=message):
        build_model(cfg, ByT5Tokenizer(), 0)


def test_every_transformers_load_passes_trust_remote_code_false():
    """No from_pretrained call in the package may leave trust_remote_code unset (transformers then prompts)."""
    import re
    from pathlib import Path

    import untrac

    calls = []
    for path in Path(untrac.__file__).parent.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"\.from_pretrained\(", text):
            depth, end = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            calls.append((path.name, text[match.start():end]))
    assert len(calls) >= 5
    assert [c for c in calls if "trust_remote_code=False" not in c[1]] == []


def test_tiny_t5_head_is_the_input_embedding_without_output_scaling():
    """transformers 5 always ties T5's lm_head to its input embedding; tie_word_embeddings=False in
    ``_tiny_t5`` only switches off the d_model^-0.5 output scaling (T5 v1.1's choice)."""
    cfg = ModelConfig(arch="seq2seq", d_model=16, num_layers=1, num_heads=2, d_ff=32)
    model, _ = build_model(cfg, load_tokenizer(cfg), seed=0)
    assert model.lm_head.weight is model.shared.weight
    assert model.config.tie_word_embeddings and not model.config.scale_decoder_outputs


def test_conv1d_as_linear_keeps_the_function_and_the_trainable_flags():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    from untrac.models import conv1d_as_linear

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)).double().eval()
    model.transformer.h[0].mlp.c_fc.bias.requires_grad_(False)
    ids = torch.randint(0, 50, (3, 7))
    before = model(input_ids=ids).logits
    assert conv1d_as_linear(model) == 4
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    assert torch.allclose(model(input_ids=ids).logits, before, rtol=0, atol=1e-12)
    assert not model.transformer.h[0].mlp.c_fc.bias.requires_grad and model.transformer.h[0].mlp.c_fc.weight.requires_grad


def test_methods_on_all_weights_record_full_coverage_in_the_summary(tmp_path):
    """Experiment.score records 100 % (all weights) unless the method recorded its own share."""
    from untrac.report import coverage_line

    exp, _ = _checkpoint_experiment(tmp_path, rows=4)
    theta0 = exp.trained(seed=0)
    exp.score(theta0, 0, 0)
    total = sum(p.numel() for p in theta0.parameters())
    counters = exp.results.counters
    assert (counters["params_covered"], counters["params_total"], counters["params_share"]) == (total, total, 1.0)
    assert coverage_line(counters)[0] == f"Parameters covered: 100.0 % (all weights, {total:,} of {total:,} parameters)."
    counters.update(params_covered=total // 2, params_share=0.5, params_covered_by="EK-FAC: 4 of 10 modules")
    exp.score(theta0, 0, 0)  # a method's own record is kept
    assert coverage_line(counters)[0] == (f"Parameters covered: EK-FAC: 4 of 10 modules, 50.0 % of parameters "
                                          f"({total // 2:,} of {total:,} parameters).")


def test_cached_hub_repo_with_remote_code_is_refused(tmp_path, monkeypatch):
    """A hub id whose cached config.json has auto_map (model=opt125m's own name, say) is refused as a folder is."""
    import json

    import huggingface_hub

    snapshot = tmp_path / "models--someone--custom-lm" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "gpt2", "auto_map": {"AutoConfig": "x.Y"}}))
    (tmp_path / "models--someone--custom-lm" / "refs").mkdir()
    (tmp_path / "models--someone--custom-lm" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = ModelConfig(name="opt125m", arch="causal", name_or_path="someone/custom-lm", tokenizer="byt5")
    with pytest.raises(UntracError, match=r"^model\.name_or_path=someone/custom-lm: config\.json has auto_map"):
        load_tokenizer(cfg)
