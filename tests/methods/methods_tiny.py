"""Tiny float64 models, data and brute-force references for the gradient-method tests.

A plain helper module (imported by name: pytest puts this folder on sys.path), not a conftest,
so it cannot clash with ``tests/conftest.py``.

The models are real HF T5 / OPT with d_model 8 and one layer; ``freeze`` leaves only a few
hundred parameters trainable so an explicit Hessian is cheap. Data: a few synthetic examples.
"""

import datasets
import pytest
import torch
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.func import functional_call

from conftest import compose_config  # tests/ is on sys.path: pytest's rootdir conftest

from untrac.config import ModelConfig, OptimConfig, UnlearnConfig
from untrac.data.collate import collate, encode_pairs
from untrac.data.synthetic import generate
from untrac.losses import example_losses
from untrac.methods import Context, get
from untrac.models import build_model, load_tokenizer

# 136 parameters: cross-attention value/output (they read the encoder) and the decoder's final norm.
# Chosen because their Hessian has distinct eigenvalues (no null space), so a single Arnoldi start
# vector spans the whole space; a feed-forward weight seen by a handful of tokens is rank-deficient.
T5_TRAINABLE = ("decoder.block.0.layer.1.EncDecAttention.v.weight", "decoder.block.0.layer.1.EncDecAttention.o.weight",
                "decoder.final_layer_norm.weight")
N_EXAMPLES = 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU they oversubscribe it
    (a 20× slowdown seen here): one thread for these tests, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(arch: str = "seq2seq", seed: int = 0):
    """A float64 tiny model (d_model 8, 1 layer), its ``Arch`` and tokenizer."""
    cfg = ModelConfig(name="tiny", arch=arch, d_model=8, num_layers=1, num_heads=2, d_ff=16, max_positions=256)
    tokenizer = load_tokenizer(cfg)
    model, arch_info = build_model(cfg, tokenizer, seed)
    return model.double().eval(), arch_info, tokenizer


def freeze(model, keep=T5_TRAINABLE):
    """Leave only the parameters named in ``keep`` trainable."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    return model


def task(tokenizer, arch, n: int = N_EXAMPLES, seed: int = 0):
    """Four synthetic training datasets and the test set split into two subsets (``n`` each)."""
    data = generate("A", seed, n=2 * n)
    train = {z: encode_pairs(tokenizer, pairs[:n], arch) for z, pairs in data.train.items()}
    test_pairs = data.test["test"]
    test = {"early": encode_pairs(tokenizer, test_pairs[:n], arch),
            "late": encode_pairs(tokenizer, test_pairs[n:], arch)}
    return train, test


def make_inputs(model, arch, train, test, pool=None, checkpoints=(), **method) -> Context:
    name = method.pop("name", "graddot")
    return Context(theta0=model, arch=arch, device=torch.device("cpu"), train=train, test=test,
                   method=get(name).config(name=name, **method), optim=OptimConfig(),
                   unlearn=UnlearnConfig(), seed=0, hessian_pool=pool, checkpoints=list(checkpoints),
                   counters={})


def shipped(name: str, **change) -> dict:
    """The method's keys exactly as ``method=<name>`` composes them (its schema's defaults and
    conf/method/<name>.yaml), plus ``change``."""
    return {**OmegaConf.to_container(compose_config(f"method={name}").method), **change}


# -- brute-force references, computed with nothing but plain autograd -------------------------------
def example_grads(model, ds: datasets.Dataset, arch) -> torch.Tensor:
    """One row per example: the gradient of that example's loss alone, over trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(ds)):
        batch = collate(ds[[i]], arch.pad_id)
        loss = example_losses(model, batch, arch)[0]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def explicit_hessian(model, ds: datasets.Dataset, arch) -> torch.Tensor:
    """∇² of the mean loss over ``ds`` w.r.t. the trainable parameters, as a dense matrix."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    batch = collate(ds[list(range(len(ds)))], arch.pad_id)

    def loss(flat):
        swapped = {n: c.view_as(p) for n, c, p in zip(names, flat.split(sizes), params)}
        wrapped = _Loss(model, arch)
        return functional_call(wrapped, {f"model.{n}": v for n, v in swapped.items()}, (batch,))

    with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU kernel has no double backward
        return torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]), vectorize=True)


class _Loss(torch.nn.Module):
    def __init__(self, model, arch):
        super().__init__()
        self.model, self.arch = model, arch

    def forward(self, batch):
        return example_losses(self.model, batch, self.arch).mean()


def assert_rel(got: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    """‖got − expected‖ ≤ tol·‖expected‖, row by row for matrices.

    The shared loss upcasts logits with ``.float()``, so even a float64 model computes its
    cross-entropy in float32: agreement is limited to ~1e-7 relative, not float64's 1e-15.
    """
    got, expected = torch.atleast_2d(got), torch.atleast_2d(expected)
    err = (got - expected).norm(dim=-1) / expected.norm(dim=-1).clamp_min(1e-300)
    assert err.max().item() <= tol, f"relative error {err.max().item():.3g} > {tol:g}"


def explicit_ggn(model, ds: datasets.Dataset, arch) -> torch.Tensor:
    """Gauss–Newton matrix of the mean loss over ``ds`` as a dense matrix, built from scratch:
    G = (1/N) Σ_i Σ_t J_itᵀ (diag p − p pᵀ) J_it / T_i with J_it = ∂logits_it/∂θ by ``jacrev``,
    one example at a time (no padding), the softmax Hessian written out."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])
    wrapped = _Logits(model, arch)
    total = torch.zeros(len(flat0), len(flat0), dtype=torch.float64)
    for i in range(len(ds)):
        batch = collate(ds[[i]], arch.pad_id)

        def logits(flat):
            swapped = {f"model.{n}": c.view_as(p) for n, c, p in zip(names, flat.split(sizes), params)}
            return functional_call(wrapped, swapped, (batch,))

        with sdpa_kernel([SDPBackend.MATH]):
            z, targets = logits(flat0), wrapped.targets(batch)
            jac = torch.func.jacrev(logits)(flat0)  # [T, V, P]
        keep = targets != -100
        z, jac = z[keep].double(), jac[keep].double()
        p = torch.softmax(z, dim=-1)
        h = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # [T, V, V]
        total += torch.einsum("tvp,tvw,twq->pq", jac, h, jac) / keep.sum()
    return total / len(ds)


class _Logits(torch.nn.Module):
    """Logits predicting the target tokens of a batch of ONE example (written out independently)."""

    def __init__(self, model, arch):
        super().__init__()
        self.model, self.arch = model, arch

    def targets(self, batch):
        return (batch["labels"] if self.arch.kind == "seq2seq" else batch["labels"][:, 1:])[0]

    def forward(self, batch):
        if self.arch.kind == "seq2seq":
            return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              labels=batch["labels"]).logits[0]
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0, :-1]


def tiny_gpt2():
    """A float64 GPT-2 (n_embd 8, one layer) with ByT5's tokenizer: its attention and MLP are ``Conv1D``."""
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

    from untrac.models import Arch

    tok = ByT5Tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=8, n_layer=1, n_head=2, n_positions=256,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                                       eos_token_id=1, pad_token_id=0))
    return model.double().eval(), Arch(kind="causal", pad_id=0, eos_id=1, max_length=256), tok
