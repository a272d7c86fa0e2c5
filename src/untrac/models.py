"""Build a model and its tokenizer from a preset: tiny random models offline, or real checkpoints.

Tiny presets (``name_or_path: null``) are built from a config object with random weights and use
ByT5's byte tokenizer, which needs no files, so tests and the default run work with no hub;
``t5_standin`` is such a model pretrained once by ``untrac.pretrain`` (its weights: ``untrac.store``).
Real presets load ``name_or_path`` (a hub id or a local directory) with ``from_pretrained``;
``opt125m`` keeps OPT-125m's architecture and tokenizer but starts from random weights, as the
paper pretrains it from scratch (§5.2). ``arch=auto`` (``model=local``) loads a local checkpoint
folder with its weights, causal or seq2seq as its config says; remote code is never run.
"""

import logging
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import (MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING, AutoConfig,
                          AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, ByT5Tokenizer,
                          OPTConfig, OPTForCausalLM, PretrainedConfig, PreTrainedModel, T5Config,
                          T5ForConditionalGeneration)

from untrac.arch import Arch
from untrac.cache import identity
from untrac.config import ModelConfig
from untrac.errors import UntracError
from untrac.model_files import (TOKENIZER_FILES, check_available, check_model_path, check_tokenizer, check_vocab_fits,
                                offline_hint, one_line, refuse_remote_code)

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UntracError(f"device={device} but CUDA is not available here; use device=auto or device=cpu")
    return torch.device(device)


def load_tokenizer(cfg: ModelConfig):
    check_model_path(cfg)
    refuse_remote_code(cfg)
    if cfg.tokenizer == "byt5":
        return ByT5Tokenizer()
    if cfg.tokenizer == "standin":
        from untrac.data.standin import build_tokenizer

        return build_tokenizer()
    key = "model.name_or_path" if cfg.tokenizer == cfg.name_or_path else "model.tokenizer"
    if Path(cfg.tokenizer).is_dir():  # the user's own files: any failure is theirs to fix
        if not any((Path(cfg.tokenizer) / name).is_file() for name in TOKENIZER_FILES):
            raise UntracError(f"{key}={cfg.tokenizer} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, …); "
                              "save the tokenizer there (tokenizer.save_pretrained) or set "
                              "model.tokenizer=<dir>|byt5")
        try:
            tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer, trust_remote_code=False)
        except Exception as err:  # noqa: BLE001 - broken or missing files fail in many ways
            raise UntracError(f"model.tokenizer={cfg.tokenizer}: cannot load a tokenizer from this folder "
                              f"({one_line(err)}); set model.tokenizer=<folder with tokenizer files> or byt5") from err
        if tokenizer.eos_token_id is None:
            raise UntracError(f"model.tokenizer={cfg.tokenizer}: the tokenizer has no EOS token, which ends every "
                              "example and document; add one (tokenizer.eos_token) and save it again")
        return check_tokenizer(tokenizer, key, cfg.tokenizer)
    check_available("tokenizer", cfg.tokenizer, "model.tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise offline_hint("tokenizer", cfg.tokenizer, "model.tokenizer", err) from err
    return check_tokenizer(tokenizer, "model.tokenizer", cfg.tokenizer)


def _tiny_t5(cfg: ModelConfig, vocab: int, pad: int, eos: int) -> PreTrainedModel:
    # transformers 5 ties T5's lm_head to the input embedding whatever the config says (the config then
    # reads tie_word_embeddings=True); False only turns off the d_model^-0.5 scaling of the decoder
    # output (config.scale_decoder_outputs, T5 v1.1's choice). Kept: the tiny presets' numbers depend on it.
    config = T5Config(vocab_size=vocab, d_model=cfg.d_model, d_kv=cfg.d_model // cfg.num_heads,
                      d_ff=cfg.d_ff, num_layers=cfg.num_layers, num_decoder_layers=cfg.num_layers,
                      num_heads=cfg.num_heads, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                      decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=eos,
                      tie_word_embeddings=False)
    return T5ForConditionalGeneration(config)


def _tiny_opt(cfg: ModelConfig, vocab: int, pad: int, eos: int) -> PreTrainedModel:
    config = OPTConfig(vocab_size=vocab, hidden_size=cfg.d_model, num_hidden_layers=cfg.num_layers,
                       ffn_dim=cfg.d_ff, num_attention_heads=cfg.num_heads,
                       max_position_embeddings=cfg.max_positions, word_embed_proj_dim=cfg.d_model,
                       dropout=0.0, attention_dropout=0.0, pad_token_id=pad, bos_token_id=eos,
                       eos_token_id=eos)
    return OPTForCausalLM(config)


def _pretrained(cfg: ModelConfig) -> PreTrainedModel:
    check_available("model", cfg.name_or_path, "model.name_or_path")
    auto = AutoModelForSeq2SeqLM if cfg.arch == "seq2seq" else AutoModelForCausalLM
    try:
        if cfg.arch == "causal":
            # §5.2 pretrains OPT from scratch: take the architecture, not the weights.
            return auto.from_config(AutoConfig.from_pretrained(cfg.name_or_path, trust_remote_code=False))
        return auto.from_pretrained(cfg.name_or_path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise offline_hint("model", cfg.name_or_path, "model.name_or_path", err) from err


def checkpoint_config(cfg: ModelConfig) -> tuple[PretrainedConfig, str]:
    """The config of the local checkpoint folder ``model.name_or_path`` and its kind, seq2seq when
    ``is_encoder_decoder`` else causal; a folder that is not a causal or seq2seq LM is an error."""
    check_model_path(cfg)
    refuse_remote_code(cfg)
    folder = Path(cfg.name_or_path)
    if not (folder / "config.json").is_file():
        raise UntracError(f"model.name_or_path={cfg.name_or_path}: the folder has no config.json, so it is not a "
                          "Hugging Face checkpoint (write one with model.save_pretrained)")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - unknown model_type, bad JSON, remote code: all the user's file
        raise UntracError(f"{folder / 'config.json'}: cannot be read ({one_line(err)})") from err
    kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    mapping = MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING if kind == "seq2seq" else MODEL_FOR_CAUSAL_LM_MAPPING
    if type(config) not in mapping:
        raise UntracError(f"model.name_or_path={cfg.name_or_path}: model_type {config.model_type!r} is not a "
                          f"{kind} language model transformers can load (AutoModelFor"
                          f"{'Seq2SeqLM' if kind == 'seq2seq' else 'CausalLM'})")
    return config, kind


def model_arch(cfg: ModelConfig, tokenizer) -> Arch:
    """What the loss code needs, read from the tokenizer and config alone (no weights loaded)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_length = cfg.max_positions
    if cfg.arch == "auto":
        config, kind = checkpoint_config(cfg)
        check_vocab_fits(cfg, tokenizer, config)
        max_length = getattr(config, "max_position_embeddings", None) or cfg.max_positions
        return Arch(kind=kind, pad_id=pad, eos_id=tokenizer.eos_token_id, max_length=max_length)
    if cfg.name_or_path:
        check_model_path(cfg)
        refuse_remote_code(cfg)
        check_available("model", cfg.name_or_path, "model.name_or_path")
        try:
            config = AutoConfig.from_pretrained(cfg.name_or_path, trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise offline_hint("model config", cfg.name_or_path, "model.name_or_path", err) from err
        check_vocab_fits(cfg, tokenizer, config)
        max_length = getattr(config, "max_position_embeddings", None) or cfg.max_positions
    return Arch(kind=cfg.arch, pad_id=pad, eos_id=tokenizer.eos_token_id, max_length=max_length)


def _local(cfg: ModelConfig, kind: str) -> PreTrainedModel:
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(cfg.name_or_path, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - missing or damaged weight files are the user's to fix
        raise UntracError(f"model.name_or_path={cfg.name_or_path}: cannot load the weights ({one_line(err)})") from err
    # Training runs in float32 (bf16 only as CUDA autocast); upcasting a bf16/fp16 checkpoint is exact.
    return model.float()


def build_model(cfg: ModelConfig, tokenizer, seed: int) -> tuple[PreTrainedModel, Arch]:
    """A fresh model (random init seeded by ``seed`` for from-scratch models)."""
    arch = model_arch(cfg, tokenizer)
    torch.manual_seed(seed)
    if cfg.arch == "auto":
        model = _local(cfg, arch.kind)
    elif cfg.name_or_path:
        model = _pretrained(cfg)
    else:
        build = _tiny_t5 if cfg.arch == "seq2seq" else _tiny_opt
        model = build(cfg, len(tokenizer), arch.pad_id, arch.eos_id)
    model.config.use_cache = False  # no generation here; the KV cache only costs memory
    return model, arch


def model_key(cfg: ModelConfig) -> dict:
    """The model config for cache keys; for a local checkpoint (``arch=auto``) also the size and
    mtime of its files and of a tokenizer folder, so a checkpoint saved again is not served stale."""
    fields = asdict(cfg)
    if cfg.pretrain is None:
        del fields["pretrain"]  # absent, as before the field existed: every cached model keeps its key
    else:  # the stand-in's weights depend on its generated text and vocabulary too, not only on the config
        from untrac.data.standin import corpus_identity

        fields.update(corpus_identity())
    if cfg.arch == "auto":
        fields["checkpoint"] = identity(cfg.name_or_path)
        if Path(cfg.tokenizer).is_dir():
            fields["tokenizer_files"] = identity(cfg.tokenizer)
    return fields


def autocast(device: torch.device, dtype: str):
    """bf16 autocast on CUDA when asked; a no-op context on the CPU (fp32 there)."""
    enabled = device.type == "cuda" and dtype == "bfloat16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


class PerExampleLinear(torch.nn.Module):
    """``linear`` applied to a [batch, tokens, d] view of a flattened [batch·tokens, d] input.

    OPT's decoder layers flatten (batch, tokens) before ``fc1``/``fc2``; kronfluence would then take
    every token for an example (and fail to add those layers' scores to the others'). Same function,
    per-example rows restored; ``batch`` is set by a pre-hook on the enclosing layer.
    """

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear, self.batch = linear, 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.view(self.batch, -1, x.shape[-1])).reshape(-1, self.linear.out_features)


def unflatten_opt_mlp(model: torch.nn.Module) -> None:
    """Wrap every OPT decoder layer's fc1/fc2 in ``PerExampleLinear`` (in place; no-op for other models)."""
    from transformers.models.opt.modeling_opt import OPTDecoderLayer

    for layer in [m for m in model.modules() if isinstance(m, OPTDecoderLayer)]:
        wrapped = []
        for name in ("fc1", "fc2"):
            wrapped.append(PerExampleLinear(getattr(layer, name)))
            setattr(layer, name, wrapped[-1])

        def set_batch(module, args, kwargs, wrapped=wrapped):
            hidden = args[0] if args else kwargs["hidden_states"]
            for w in wrapped:
                w.batch = hidden.shape[0]

        layer.register_forward_pre_hook(set_batch, with_kwargs=True)


def coverage(model: torch.nn.Module, params=None) -> tuple[int, int]:
    """(numbers in ``params``, numbers in all of ``model``'s parameters); ``params=None``: all of them.
    A tensor shared by two modules (tied embeddings) counts once on both sides."""
    every = {id(p): p.numel() for p in model.parameters()}
    chosen = every if params is None else {id(p): p.numel() for p in params}
    return sum(chosen.values()), sum(every.values())


def record_coverage(counters: dict, model: torch.nn.Module, params=None, by: str = "all weights") -> None:
    """The share of ``model``'s parameters a method scores with (metrics.json ``counters``, one summary line):
    methods that take gradients of all weights cover 100 %, EK-FAC and LoRA only their modules."""
    covered, total = coverage(model, params)
    counters.update(params_covered=covered, params_total=total, params_share=covered / total if total else 0.0,
                    params_covered_by=by)


def leaf_modules(model: torch.nn.Module) -> list[str]:
    """The modules that hold parameters themselves (linear layers, embeddings, norms): what "k of n modules" counts."""
    return [name for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def conv1d_as_linear(model: torch.nn.Module) -> int:
    """Replace every transformers ``Conv1D`` (GPT-2's linear layers: y = x·V + b with V = Wᵀ stored) by
    the ``nn.Linear`` with weight W = Vᵀ, the same function, in place; kronfluence factors nn.Linear and
    nn.Conv2d only, so without this EK-FAC would cover GPT-2's lm_head alone. Returns how many."""
    from transformers.pytorch_utils import Conv1D

    found = [(name, m) for name, m in model.named_modules() if isinstance(m, Conv1D)]
    for name, conv in found:
        linear = torch.nn.Linear(conv.nx, conv.nf, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.T)
            linear.bias.copy_(conv.bias)
        linear.weight.requires_grad_(conv.weight.requires_grad)
        linear.bias.requires_grad_(conv.bias.requires_grad)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, linear)
    return len(found)


def record_all_weights(counters: dict, model: torch.nn.Module) -> None:
    """After scoring: a method that recorded no coverage of its own took gradients of every trainable weight."""
    if "params_covered" not in counters:
        record_coverage(counters, model, [p for p in model.parameters() if p.requires_grad])
