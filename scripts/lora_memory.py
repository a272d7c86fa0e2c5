"""GPU memory per stage of one UnTrac unlearning run on a 7B model: full unlearning vs LoRA.

Computed from the model's shape, not measured on a GPU (docs/lora.md states the assumptions):
    python scripts/lora_memory.py [--tokens 1024] [--eval-batch 64] [--r 8]
    python scripts/lora_memory.py --check    # the per-layer activation count against HF's Llama (CPU)
"""

import argparse

GB = 1e9
# Llama-2-7B: 32 layers, d 4096, 32 heads, SwiGLU width 11008, vocabulary 32000, untied head.
L, D, F, V = 32, 4096, 11008, 32000


def n_params() -> int:
    per_layer = 4 * D * D + 3 * D * F + 2 * D  # q k v o, gate up down, two RMSNorms
    return L * per_layer + 2 * V * D + D  # + embedding, head, final norm


def lora_params(r: int, modules_per_layer: int = 2) -> int:
    return L * modules_per_layer * r * (D + D)  # A: r×d_in, B: d_out×r for q_proj and v_proj (d×d)


def layer_bytes_per_token(weight_bytes: int, lora: bool, d: int = D, f: int = F) -> int:
    """Bytes one decoder layer keeps for the backward pass, per token (counted on HF's Llama with
    ``--check``). fp32 weights under bf16 autocast (the runner), full unlearning: each RMSNorm's fp32
    input and normalised output (2·8d), the bf16 cast of the input made separately for q, k, v, gate
    and up (5·2d), q, k, v and the attention output (4·2d), gate, up, SiLU(gate) and their product
    (4·2f): 34d + 8f. LoRA on q, v: frozen linears keep no input and the frozen norms no output:
    the norms' fp32 inputs (8d), the q and v input casts (4d), q, k, v, attention output (8d) and
    gate, up, SiLU(gate) (6f): 20d + 6f. bf16 weights (not in the runner, not checked): one input
    for q, k, v and one for gate, up instead of five casts: − 6d (full), − 2d (LoRA)."""
    count = (20 * d + 6 * f) if lora else (34 * d + 8 * f)
    return count - ((2 if lora else 6) * d if weight_bytes == 2 else 0)


def activation_bytes_per_token(weight_bytes: int, lora: bool) -> float:
    """Every layer's (the first adapted layer is layer 0, so LoRA needs them all, as full
    unlearning does) plus the loss at its peak: bf16 logits, their fp32 copy (``untrac.losses``
    upcasts) and the fp32 log-softmax (the part kept for the backward): V·(2 + 4 + 4)."""
    return L * layer_bytes_per_token(weight_bytes, lora) + 10 * V


def check(tokens: int = 128, d: int = 512, f: int = 1376) -> None:
    """Count the bytes autograd saves per layer-token on a narrow HF Llama (CPU, bf16 autocast,
    fp32 weights): the difference between 3 and 2 layers, against ``layer_bytes_per_token``."""
    import sys
    from pathlib import Path

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from untrac.config import LoraConfig
    from untrac.lora import with_adapter

    def saved(layers: int, lora: bool) -> int:
        cfg = LlamaConfig(hidden_size=d, intermediate_size=f, vocab_size=1000, num_hidden_layers=layers,
                          num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=tokens)
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).eval()
        model = with_adapter(model, LoraConfig(), 0) if lora else model
        seen: set[int] = set()

        def pack(t):  # activations only (a token dimension), each storage once
            if t.dim() >= 2 and tokens in t.shape:
                seen.add((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16):
            model(input_ids=torch.randint(0, 1000, (1, tokens)))
        return sum(n for _, n in seen)

    for lora in (False, True):
        measured = (saved(3, lora) - saved(2, lora)) / tokens
        print(f"{'LoRA' if lora else 'full'}: measured {measured:.0f} B per layer-token, "
              f"formula {layer_bytes_per_token(4, lora, d, f)}")


def eval_bytes(batch: int, tokens: int) -> float:
    """No-grad forward of one evaluation batch: the logits path (V·10 B per token) dominates, plus
    one layer's MLP intermediates alive at a time (gate, up, product: 3·f·2 B per token)."""
    return batch * tokens * (10 * V + 6 * F)


COLUMNS = ["θ0", "trainable copy", "grads", "optimizer", "bf16 weight copies", "activations"]


def table(tokens: int, r: int) -> list[tuple[str, list[float]]]:
    """GB per part. fp32 storage: the trainable copy is fp32; under autocast every matmul keeps the
    bf16 copy of its weight for the backward (cached for trainable weights, saved by autograd for
    frozen ones: the same 2 B/param either way). bf16 storage: full unlearning needs an fp32
    master copy besides the bf16 working weights (a 5e-5 step is below bf16's resolution)."""
    p, a = n_params(), lora_params(r)
    g = lambda n_bytes: n_bytes / GB  # noqa: E731
    adapter = [g(a * 4), g(2 * a * 4)]  # adapters stay fp32 (peft's default), Adam m and v
    rows = []
    for storage, wb in (("fp32 weights + bf16 autocast (the runner)", 4), ("bf16 weights (not in the runner)", 2)):
        theta0, cast = g(p * wb), (g(p * 2) if wb == 4 else 0.0)
        copy = g(p * 4) if wb == 4 else g(p * 2 + p * 4)
        act_full, act_lora = (g(activation_bytes_per_token(wb, lora) * tokens) for lora in (False, True))
        rows += [(f"full, Adam — {storage}", [theta0, copy, g(p * wb), g(2 * p * 4), cast, act_full]),
                 (f"full, Adafactor — {storage}", [theta0, copy, g(p * wb), 0.0, cast, act_full]),
                 (f"LoRA r={r} q,v, Adam — {storage}", [theta0, 0.0, adapter[0], adapter[1], cast, act_lora])]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024, help="tokens per unlearning batch (batch 1 × seq)")
    ap.add_argument("--eval-batch", type=int, default=64, help="unlearn.eval_batch_size")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--check", action="store_true", help="count the saved activations of a narrow Llama (CPU)")
    args = ap.parse_args()
    if args.check:
        return check()
    p, a = n_params(), lora_params(args.r)
    print(f"parameters {p / 1e9:.3f} B; LoRA r={args.r} on q_proj,v_proj: {a:,} ({a / p:.4%})\n")
    print(f"Unlearning step, batch 1 × {args.tokens} tokens (GB; total + 1 GB CUDA context and slack):\n")
    print("| setting | " + " | ".join(COLUMNS) + " | total | fits 24 / 40 / 80 GB |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    for name, parts in table(args.tokens, args.r):
        total = sum(parts) + 1.0
        fits = " / ".join("yes" if total <= cap else "no" for cap in (24, 40, 80))
        print(f"| {name} | " + " | ".join(f"{x:.2f}" for x in parts) + f" | {total:.1f} | {fits} |")
    print("\nEvaluation (no grad), transient on top of the weights:\n")
    for b in sorted({args.eval_batch, 8}, reverse=True):
        print(f"- eval batch {b} × {args.tokens} tokens: {eval_bytes(b, args.tokens) / GB:.1f} GB "
              f"(+ θ0: {p * 4 / GB:.1f} GB fp32, {p * 2 / GB:.1f} GB bf16)")
    print("\nActivations per token (MB), full / LoRA: fp32 weights "
          f"{activation_bytes_per_token(4, False) / 1e6:.2f} / {activation_bytes_per_token(4, True) / 1e6:.2f}, "
          f"bf16 weights {activation_bytes_per_token(2, False) / 1e6:.2f} / {activation_bytes_per_token(2, True) / 1e6:.2f}")

if __name__ == "__main__":
    main()
