"""EK-FAC through kronfluence (``method=ekfac``) against dense float64 linear algebra.

When is EK-FAC exact? It approximates the curvature F = (1/N) Σ_n g_n g_nᵀ of one linear layer
(g_n = Σ_t s_t ⊗ a_t: output gradients s, inputs a) by Q diag(Λ) Qᵀ with Q = Q_A ⊗ Q_S, the
eigenbases of the K-FAC factors A = E[a aᵀ], S = E[s sᵀ], and Λ = diag(Qᵀ F Q) — the eigenvalue
correction, computed exactly from all pool examples. So EK-FAC = F exactly iff Qᵀ F Q is
diagonal. Two cases make that hold by construction, each with a frozen one-hot embedding in front
of the only trainable layer (a bigram LM; every example is [context, target], one target token):

* shared context — the layer is the LM head and every pool example has the same context token
  c, so every gradient is s_n ⊗ e_c and F = S_c ⊗ e_c e_cᵀ is a Kronecker product (its
  eigenvectors are Q_S ⊗ e_c; e_c is an eigenvector of the diagonal A as long as c's count is
  unique). At θ0 = the maximum-likelihood head for c (softmax = the pool's label frequencies),
  the empirical Fisher equals the GGN: (1/N) Σ_n (p − e_yn)(p − e_yn)ᵀ = diag(p) − p pᵀ when the
  y_n have frequencies p. So here EK-FAC is the *true GGN* exactly.
* one output unit — the layer maps the one-hot input to a scalar (a frozen head spreads it over
  the vocabulary): S is 1×1 and F is diagonal (F_ii = mean of s² over examples with context i),
  while A is diagonal with the token counts (all distinct, so Q_A is the standard basis). K-FAC
  (A ⊗ S) is wrong here — F_ii/A_ii differs between tokens — and the eigenvalue correction alone
  makes EK-FAC exact.

Both use ``method.fisher=empirical`` (true labels): a sampled Fisher is exact only in expectation,
which ``test_sampled_fisher_is_the_ggn_in_expectation`` checks separately, at the per-example
scaling that makes it the GGN of our mean-token loss.
"""

import json
from types import SimpleNamespace

import datasets
import pytest
import torch
from methods_tiny import example_grads, freeze, make_inputs, one_thread, shipped, task, tiny, tiny_gpt2  # noqa: F401
from torch.func import functional_call, jacrev

from untrac.data.collate import IGNORE, collate
from untrac.errors import UntracError
from untrac.models import Arch

ekfac = pytest.importorskip("untrac.methods.ekfac")
if ekfac.Analyzer is None:
    pytest.skip("kronfluence is not installed (pip install 'untrac[ekfac]')", allow_module_level=True)

ARCH = Arch(kind="causal", pad_id=0, eos_id=0, max_length=8)
V = 5


class OneLayerLM(torch.nn.Module):
    """Frozen one-hot embedding → trainable ``layer`` (bias-free) → optional frozen ``head``."""

    def __init__(self, width: int | None, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Embedding(V, V).double().requires_grad_(False)
        self.embed.weight.copy_(torch.eye(V, dtype=torch.float64))
        self.layer = torch.nn.Linear(V, width or V, bias=False).double()
        self.layer.weight.data = torch.randn(width or V, V, generator=gen, dtype=torch.float64)
        self.head = None
        if width:
            self.head = torch.nn.Linear(width, V, bias=False).double().requires_grad_(False)
            self.head.weight.copy_(torch.randn(V, width, generator=gen, dtype=torch.float64))

    def forward(self, input_ids, attention_mask=None):
        h = self.layer(self.embed(input_ids))
        return SimpleNamespace(logits=self.head(h) if self.head is not None else h)


def sequences(rows) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [list(r) for r in rows], "labels": [list(r) for r in rows]})


def random_sets(names, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return {name: sequences(torch.randint(0, V, (n, 2), generator=gen).tolist()) for name in names}


def explicit_ggn(model, ds, arch=ARCH) -> torch.Tensor:
    """GGN of the mean (over examples) of the mean-token NLL: (1/N) Σ_n (1/T_n) Σ_t J_tᵀ (diag p − p pᵀ) J_t,
    with J = ∂logits/∂θ from ``jacrev`` over the trainable parameters."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p.detach() for p in model.parameters() if p.requires_grad]
    batch = collate(ds[list(range(len(ds)))], arch.pad_id)

    def logits(flat):
        swapped = {n: c.view_as(p) for n, c, p in zip(names, flat.split([p.numel() for p in params]), params)}
        return functional_call(model, swapped, (batch["input_ids"], batch["attention_mask"])).logits[:, :-1]

    flat = torch.cat([p.reshape(-1) for p in params])
    jac, z = jacrev(logits)(flat), logits(flat)
    targets = batch["labels"][:, 1:]
    p = torch.softmax(z, dim=-1)
    h = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    weight = (targets != IGNORE) / (targets != IGNORE).sum(1, keepdim=True)
    return torch.einsum("nt,ntvp,ntvw,ntwq->pq", weight.double(), jac, h, jac) / len(ds)


def explicit_scores(model, train, test, curvature, damping, normalize):
    """(mean ĝ_Z)ᵀ (G + λI)⁻¹ (mean g'_Z') by ``torch.linalg.solve``; per-example gradients by autograd."""
    system = curvature + damping * torch.eye(len(curvature), dtype=torch.float64)
    out = {}
    for z, ds in train.items():
        rows = example_grads(model, ds, ARCH)
        g = (rows / rows.norm(dim=1, keepdim=True)).mean(0) if normalize else rows.mean(0)
        for s, t in test.items():
            out[(z, s)] = torch.dot(g, torch.linalg.solve(system, example_grads(model, t, ARCH).mean(0))).item()
    return out


def method(**overrides):
    """The shipped ``method=ekfac`` values (schema defaults and conf/method/ekfac.yaml), with ``overrides``."""
    return shipped("ekfac", **overrides)


def max_relative_error(frame, expected):
    """Largest |got − expected| over the (Z, Z') pairs, relative to the largest |expected| (a pair whose
    sets share no context token scores exactly 0 with the one-hot models)."""
    got = {(r.train_dataset, r.test_subset): r.influence for r in frame.itertuples()}
    assert got.keys() == expected.keys()
    return max(abs(got[k] - expected[k]) for k in expected) / max(abs(v) for v in expected.values())


def test_exact_for_the_ggn_with_a_shared_context():
    counts = torch.arange(1, V + 1, dtype=torch.float64)  # label y appears y+1 times, context 0 always
    pool = sequences([(0, y) for y in range(V) for _ in range(int(counts[y]))])
    model = OneLayerLM(width=None)
    with torch.no_grad():
        model.layer.weight[:, 0] = (counts / counts.sum()).log()  # the maximum-likelihood head for context 0
    ggn = explicit_ggn(model, pool)
    rows = example_grads(model, pool, ARCH)
    torch.testing.assert_close(rows.T @ rows / len(pool), ggn, rtol=1e-10, atol=1e-12)  # empirical Fisher = GGN
    train, test = random_sets(["z1", "z2"], 6, seed=1), random_sets(["s1", "s2", "s3"], 5, seed=2)
    for normalize in (True, False):
        cfg = method(fisher="empirical", normalize_train=normalize)
        frame = ekfac.score_ekfac(make_inputs(model, ARCH, train, test, pool=pool, **cfg))
        expected = explicit_scores(model, train, test, ggn, cfg["damping"], normalize)
        assert max_relative_error(frame, expected) < 1e-9


def test_exact_with_one_output_unit_where_kfac_is_not():
    pairs = [(0, 4), (1, 4), (1, 4), (2, 4), (2, 4), (2, 4)] + [(3, 4)] * 4 + [(3, 0)] * 3
    pool = sequences(pairs)
    occurrences = torch.bincount(torch.tensor(pairs).reshape(-1), minlength=V)
    assert len(set(occurrences.tolist())) == V  # distinct counts: A's eigenbasis is the standard basis
    model = OneLayerLM(width=1)
    rows = example_grads(model, pool, ARCH)
    fisher = rows.T @ rows / len(pool)
    assert torch.count_nonzero(fisher - torch.diag(torch.diag(fisher))) == 0
    contexts = torch.tensor([x for x, _ in pairs])
    kfac_ratio = torch.diag(fisher)[:4] / torch.bincount(contexts, minlength=V)[:4]
    assert kfac_ratio.max() / kfac_ratio.min() > 1.2  # F is not A ⊗ S: K-FAC alone would be wrong
    train, test = random_sets(["z1", "z2", "z3"], 3, seed=3), random_sets(["s1"], 4, seed=4)
    cfg = method(fisher="empirical")
    frame = ekfac.score_ekfac(make_inputs(model, ARCH, train, test, pool=pool, **cfg))
    expected = explicit_scores(model, train, test, fisher, cfg["damping"], cfg["normalize_train"])
    assert max_relative_error(frame, expected) < 1e-9


def test_sampled_fisher_is_the_ggn_in_expectation():
    """E[g gᵀ] over labels drawn by ``compute_train_loss(sample=True)`` = the GGN of the mean-token
    loss, for examples with 1 to 3 target tokens (the 1/√T scaling; without it, off by T).

    The examples' context tokens are disjoint ({0}, {1}, {2, 3}), so each example's gradient is the
    batch gradient's columns of its own contexts: one backward pass per draw for all three.
    """
    pool = sequences([(0, 3), (1, 1, 4), (2, 3, 2, 0)])
    contexts = [[0], [1], [2, 3]]
    model = OneLayerLM(width=None, seed=5)
    model_task = ekfac.UntracTask(ARCH, ["layer"], torch.Generator().manual_seed(0))
    batch = collate(pool[list(range(len(pool)))], ARCH.pad_id)
    draws, total = 1000, torch.zeros(V * V, V * V, dtype=torch.float64)
    for _ in range(draws):
        grad = torch.autograd.grad(model_task.compute_train_loss(batch, model, sample=True), model.layer.weight)[0]
        for columns in contexts:
            g = torch.zeros_like(grad)
            g[:, columns] = grad[:, columns]
            total += torch.outer(g.reshape(-1), g.reshape(-1))
    estimate, ggn = total / (draws * len(pool)), explicit_ggn(model, pool)
    # Monte Carlo error ≈ 0.05–0.07 at 1000 draws (seeds 0–2); a missing 1/√T would give ≥ 1.
    assert ((estimate - ggn).norm() / ggn.norm()).item() < 0.2


@pytest.mark.parametrize("arch,keep", [
    ("seq2seq", None),  # two cross-attention projections and a layer norm (not a linear layer: left out)
    ("causal", ("model.decoder.layers.0.self_attn.v_proj.weight", "model.decoder.layers.0.self_attn.v_proj.bias",
                "model.decoder.layers.0.fc2.weight", "model.decoder.layers.0.fc2.bias",
                "model.decoder.final_layer_norm.weight")),
])
def test_huge_damping_gives_gradient_dot_product_over_linear_layers(arch, keep):
    """(G + λI)⁻¹ → I/λ: λ·EKFAC → ĝ_Zᵀ ḡ_Z' over the tracked linear layers of a real T5 / OPT, with the
    default (sampled) Fisher, per-example normalisation and the seq2seq encoder/decoder masks."""
    model, arch_info, tok = tiny(arch)
    freeze(model) if keep is None else freeze(model, keep)
    train, test = task(tok, arch_info, n=3)
    pool = datasets.concatenate_datasets([train["dataset1"], train["dataset3"]])
    damping = 1e7
    frame = ekfac.score_ekfac(make_inputs(model, arch_info, train, test, pool=pool, **method(damping=damping)))
    linear = [f"{n}." for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    columns = torch.cat([torch.full((p.numel(),), any(n.startswith(m) for m in linear))
                         for n, p in zip(names, [p for p in model.parameters() if p.requires_grad])])
    assert 0 < columns.sum() < len(columns)
    expected = {}
    for z, ds in train.items():
        rows = example_grads(model, ds, arch_info)[:, columns]
        g = (rows / rows.norm(dim=1, keepdim=True)).mean(0)
        for s, t in test.items():
            expected[(z, s)] = torch.dot(g, example_grads(model, t, arch_info)[:, columns].mean(0)).item() / damping
    assert max_relative_error(frame, expected) < 1e-4



def test_gpt2_conv1d_layers_are_covered_not_just_lm_head():
    """GPT-2's attention and MLP layers are transformers ``Conv1D``, which kronfluence cannot track: they
    are converted to nn.Linear, so with only they trainable, λ·EKFAC → the gradient dot product over
    exactly them (huge damping), and the coverage counters say which share of the model that is."""
    model, arch, tok = tiny_gpt2()
    conv = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    for name, p in model.named_parameters():
        p.requires_grad_(any(f".{c}." in name for c in conv))
    train, test = task(tok, arch, n=3)
    train = {z: train[z] for z in ("dataset1", "dataset3")}
    damping = 1e7
    inputs = make_inputs(model, arch, train, test, pool=train["dataset1"], **method(damping=damping))
    frame = ekfac.score_ekfac(inputs)
    expected = {}
    for z, ds in train.items():
        rows = example_grads(model, ds, arch)
        g = (rows / rows.norm(dim=1, keepdim=True)).mean(0)
        for s, t in test.items():
            expected[(z, s)] = torch.dot(g, example_grads(model, t, arch).mean(0)).item() / damping
    assert max_relative_error(frame, expected) < 1e-4
    counters = inputs.counters
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counters["ekfac_modules"] == 4 and counters["params_covered"] == trainable
    assert counters["params_total"] == sum(p.numel() for p in model.parameters())
    assert counters["params_covered_by"] == "EK-FAC: 4 of 10 modules" and 0 < counters["params_share"] < 1


def test_ekfac_needs_damping():
    from untrac.methods import registry

    with pytest.raises(UntracError, match=r"method\.damping must be > 0 for ekfac"):
        registry()["ekfac"].config(name="ekfac", damping=0.0)


def test_missing_kronfluence_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(ekfac, "Analyzer", None)
    train, test = random_sets(["z1"], 2, seed=0), random_sets(["s1"], 2, seed=1)
    inputs = make_inputs(OneLayerLM(width=None), ARCH, train, test, pool=train["z1"], name="ekfac")
    with pytest.raises(UntracError, match=r"pip install 'untrac\[ekfac\]'"):
        ekfac.score_ekfac(inputs)


def test_no_trainable_linear_layer_is_one_clear_line():
    model = OneLayerLM(width=None).requires_grad_(False)
    model.embed.weight.requires_grad_(True)  # an embedding: trainable, but not a linear layer
    train, test = random_sets(["z1"], 2, seed=0), random_sets(["s1"], 2, seed=1)
    with pytest.raises(UntracError, match="no trainable nn.Linear"):
        ekfac.score_ekfac(make_inputs(model, ARCH, train, test, pool=train["z1"], name="ekfac"))


@pytest.mark.slow
def test_method_ekfac_runs_in_the_pipeline(tmp_path):
    """``python -m untrac.run method=ekfac`` on the tiny default job (shrunk): results for every pair."""
    import pandas as pd
    from test_run import REPO, SMALL, untrac

    proc = untrac(*SMALL, "method=ekfac", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    influence = pd.read_csv(tmp_path / "run" / "influence.csv")
    assert set(influence.method) == {"ekfac"} and influence.is_final.all()
    assert set(influence.train_dataset) == {"dataset1", "dataset2", "dataset3", "dataset4"}
    assert influence.influence.notna().all() and (influence.influence != 0).all()
    counters = json.loads((tmp_path / "run" / "metrics.json").read_text())["counters"]
    assert counters["ekfac_modules"] > 0 and counters["ekfac_damping"] == method()["damping"]
    assert counters["params_covered_by"].startswith(f"EK-FAC: {counters['ekfac_modules']} of ")
    assert 0 < counters["params_covered"] < counters["params_total"]  # layer norms (and T5's position biases) are left out
    assert f"% of parameters ({counters['params_covered']:,} of" in (tmp_path / "run" / "summary.md").read_text()
    assert not (REPO / "influence_results").exists()  # kronfluence's default output folder: not used


def test_cross_attention_keys_and_values_count_only_real_encoder_positions(tmp_path):
    """T5's cross-attention k/v project the encoder's output, one row per *encoder* position, so their
    K-FAC factors must count the real encoder tokens only: fitting on a padded batch (the short
    inputs padded to the longest) gives the same factors as fitting one unpadded example at a time.
    With the decoder's mask (a different size) kronfluence would count the padded positions."""
    keep = tuple(f"decoder.block.0.layer.1.EncDecAttention.{p}.weight" for p in "kv")
    model, arch, tok = tiny("seq2seq")
    freeze(model, keep)
    train, test = task(tok, arch, n=3)
    pool = datasets.concatenate_datasets([train["dataset1"], train["dataset3"]])
    lengths = [len(ids) for ids in pool["input_ids"]]
    assert len(set(lengths)) > 1  # the batched fit pads some encoder inputs

    def factors(batch_size):
        inputs = make_inputs(model, arch, train, test, pool=pool,
                             **method(fisher="empirical", hessian_batch_size=batch_size))
        with ekfac.frozen_heap():  # as score_ekfac runs it: kronfluence's gc.collect() calls skip the old heap
            scorer = ekfac.EkfacScorer(inputs, str(tmp_path / f"b{batch_size}"))
            return scorer.analyzer.load_covariance_matrices(factors_name="ekfac")

    alone, padded = factors(1), factors(len(pool))
    for name in ("decoder.block.0.layer.1.EncDecAttention.k", "decoder.block.0.layer.1.EncDecAttention.v"):
        assert alone["num_activation_covariance_processed"][name].item() == sum(lengths)
        assert padded["num_activation_covariance_processed"][name].item() == sum(lengths)
        torch.testing.assert_close(padded["activation_covariance"][name], alone["activation_covariance"][name])
        torch.testing.assert_close(padded["gradient_covariance"][name], alone["gradient_covariance"][name])
