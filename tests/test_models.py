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
