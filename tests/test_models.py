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
                      tokenizer="facebook/not-a-model-here")
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
    """A random tiny causal (GPT-2) or seq2seq (T5) model and ByT5's tokenizer, saved as a user would."""
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()
    vocab = vocab or len(tokenizer)
    torch.manual_seed(0)
    if kind == "causal":
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


def test_steps_zero_makes_the_checkpoint_theta0_and_refuses_theta_minus_z(tmp_path):
    import json

    from untrac.config import Config, DataConfig, GroundTruthConfig, TestsetConfig as SubsetsConfig, TrainConfig
    from untrac.pipeline import Experiment

    saved = _tiny_checkpoint(tmp_path / "ckpt", "causal")
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": f"{name}{i} ", "target": "x"}) + "\n"
                                                        for i in range(6)))
    cfg = Config(model=local(tmp_path / "ckpt"), train=TrainConfig(steps=0, batch_size=2),
                 data=DataConfig(name="files", kind="files",
                                 train={"a": str(tmp_path / "a.jsonl"), "b": str(tmp_path / "b.jsonl")}),
                 testset=SubsetsConfig(name="files", subsets={"t": str(tmp_path / "a.jsonl")}),
                 device="cpu", cache_dir=str(tmp_path / "cache"), groundtruth=GroundTruthConfig(mode="none"))
    exp = Experiment(cfg)
    state = exp.trained(seed=0).state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert not (tmp_path / "cache" / "models").exists()  # nothing trained, nothing copied
    with pytest.raises(UntracError, match=r"train\.steps=0 trains nothing.*groundtruth\.mode=none"):
        exp.trained(seed=0, exclude="a")
