"""Curvature operators for HIF (paper Eq. 8) and a Lanczos estimate of their top eigenvalue.

The default HIF operator is the Gauss–Newton matrix (GGN) of the mean loss over one FIXED pool of
training examples (DESIGN §2 "HIF must have a well-posed target"):

    G = (1/N) Σ_i J_iᵀ H_i J_i,   J_i = ∂(logits of example i)/∂θ,
    H_i = ∇²_logits L(z_i) = (1/T_i) Σ_t (diag p_t − p_t p_tᵀ)  (softmax cross-entropy, T_i scored tokens).

Each H_i is positive semi-definite, so G is too, and G + λI is positive definite for any damping
λ > 0: (G + λI)⁻¹ exists and LiSSA / Arnoldi have one well-defined target. The exact Hessian
differs from G by a term weighted by the residuals ∂L/∂logits, which makes it indefinite at an
unconverged θ0 (measured on the default tiny T5: eigenvalues down to ≈ −8). G is the curvature
used by EK-FAC / kronfluence (Grosse et al. 2023) and by Martens' Hessian-free optimisation.

The pool is processed in fixed chunks of ``hessian_batch_size`` examples (memory), and every
product is the mean over the whole pool, so the operator is the same matrix at every call.
"""

import math
from pathlib import Path
from typing import Callable

import datasets
import torch

from untrac.data.collate import IGNORE, collate
from untrac.losses import token_logits
from untrac.methods.grads import GradientSettings, bump, eager_attention, flatten, hvp, trainable, unflatten
from untrac.models import Arch, autocast

Operator = Callable[[torch.Tensor], torch.Tensor]


def softmax_ce_hessian_product(logits: torch.Tensor, targets: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """H u for H = ∇²_logits of each example's mean token cross-entropy, [B, T, V] → [B, T, V].

    Per scored token: (diag p − p pᵀ) u = p ⊙ u − p (pᵀu), scaled by 1/T_i (the example's loss is
    a mean over its T_i target tokens); tokens that are not scored (``IGNORE``) contribute nothing.
    """
    p = torch.softmax(logits.detach(), dim=-1)
    scored = (targets != IGNORE).to(p.dtype)
    weight = (scored / scored.sum(dim=1, keepdim=True).clamp(min=1))[..., None]
    return weight * (p * u - p * (p * u).sum(dim=-1, keepdim=True))


class GGNGraph:
    """The vector-independent half of a GGN product for one batch: the forward pass and w(u) = Jᵀu
    with its graph (``create_graph``), so that ``apply`` costs two backward passes per vector.

    J v comes from the "double-vjp" trick: w(u) = Jᵀu is linear in a dummy cotangent u, so
    ∂⟨w(u), v⟩/∂u = J v. Then Jᵀ (H J v) is one more vjp through the same forward graph.
    """

    def __init__(self, model, batch: dict[str, torch.Tensor], arch: Arch, dtype: str, device: torch.device):
        self.params = trainable(model)
        with eager_attention(model), autocast(device, dtype):
            self.logits, self.targets = token_logits(model, batch, arch)
            self.dummy = torch.zeros_like(self.logits, requires_grad=True)
            jt_dummy = torch.autograd.grad(self.logits, self.params, self.dummy, create_graph=True, allow_unused=True)
        self.used = [(i, g) for i, g in enumerate(jt_dummy) if g is not None]

    def apply(self, vector: torch.Tensor, keep: bool) -> torch.Tensor:
        """Σ_{i in batch} J_iᵀ H_i J_i v; ``keep`` retains the graph for the next vector."""
        parts = unflatten(vector, self.params)
        (jv,) = torch.autograd.grad([g for _, g in self.used], self.dummy,
                                    [parts[i].to(g.dtype) for i, g in self.used], retain_graph=keep)
        hjv = softmax_ce_hessian_product(self.logits, self.targets, jv)
        out = torch.autograd.grad(self.logits, self.params, hjv, allow_unused=True, retain_graph=keep)
        return flatten(out, self.params).detach().to(vector.dtype)


def ggn_product(model, batch: dict[str, torch.Tensor], arch: Arch, vector: torch.Tensor, dtype: str = "float32"
                ) -> torch.Tensor:
    """Σ_{i in batch} J_iᵀ H_i J_i v (a SUM over the batch's examples), by reverse-mode autograd only."""
    return GGNGraph(model, batch, arch, dtype, vector.device).apply(vector, keep=False)


def graph_bytes(build: Callable[[], object], shared: list[torch.Tensor]) -> tuple[object, int]:
    """``build()`` and the bytes its autograd graph holds: each saved storage once, ``shared`` (the
    parameters, which the graph references but does not copy) left out.

    Counting each saved tensor instead counted views and re-saved tensors again: 4.1 GB for the
    synthB pool's graphs, which hold 2.1 GB (peak RSS, ``scripts/bench_ggn.py``); per storage, 2.0 GB.
    """
    held: dict[int, int] = {}
    skip = {t.untyped_storage().data_ptr() for t in shared}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            held[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        return build(), sum(held.values())


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes this process's memory cgroup still allows (limit − usage), or None when it sets no limit.

    A cluster job (Slurm, a container) is killed at its cgroup's limit, however much the host has
    available. cgroup v2 (``0::<path>``: memory.max, memory.current) or v1 (``…:memory:<path>``:
    memory.limit_in_bytes, memory.usage_in_bytes — page cache included, so an under-estimate).
    Only the process's own cgroup is read, not its parents' (Slurm limits the job's own).
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            folder, limit, usage = root / path.lstrip("/"), "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            folder, limit, usage = root / "memory" / path.lstrip("/"), "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        try:
            cap, used = (folder / limit).read_text().strip(), int((folder / usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 2**60:  # "max" (v2) or ~2^63 (v1): no limit
            return max(0, int(cap) - used)
    return None


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the CUDA allocator's view, or the host's ``MemAvailable`` within the
    process's cgroup limit (``cgroup_headroom``).

    Not the free pages (``SC_AVPHYS_PAGES``), which leave out the reclaimable page cache: with them,
    5 of the 6 synthB HIF runs of a cpu Table 2 sweep (two jobs side by side on 24 GB) recomputed
    their graphs; with ``MemAvailable``, 4 (the rest was ``graph_bytes`` over-counting, since fixed).
    """
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = 0  # not Linux: do not assume memory is there
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024  # the kernel writes kB
    except OSError:
        pass
    headroom = cgroup_headroom()
    return available if headroom is None else min(available, headroom)


class PoolOperator:
    """v ↦ M v with M the mean over a fixed pool of a per-example curvature (GGN or exact Hessian).

    The pool is cut once, in its own order, into chunks of ``settings.batch_size`` (memory only);
    every call visits all chunks, so LiSSA, its λ_max estimate and Arnoldi all iterate one and the
    same matrix; ``settings`` also gives the arch, device and autocast dtype.
    ``kind``: "ggn" (default, PSD) or "hessian" (the exact Hessian; for the authors' variant's
    checks). Counters: ``hvp`` (operator-chunk products) and ``hvp_examples``.

    GGN graphs: every product repeats each chunk's forward pass and Jᵀu graph, which do not depend
    on the vector. ``keep_graphs`` keeps them from the first call on, so later products cost two
    backward passes per chunk (the same numbers, bit for bit: tests/methods/test_hif.py). Measured
    on the tiny T5 (pool 256, one thread, scripts/bench_ggn.py): 3.4 → 1.9 s per product on synthA
    (~1.4 GB held), 5.4 → 3.6 s on synthB (~2.1 GB); in the cpu Table 2 sweep, two jobs side by
    side, synthA's Arnoldi job took 258 s recomputing and 166 s keeping (docs/results.md). ``None``
    (default) keeps them when the graphs of all chunks, estimated from the first one, fit in
    ``GRAPH_MEMORY_SHARE`` of the device's free memory — a tiny model on a CPU does, OPT-125m or
    T5-XL pools do not.
    """

    GRAPH_MEMORY_SHARE = 0.25

    def __init__(self, model, pool: datasets.Dataset, settings: GradientSettings, counters: dict | None = None,
                 kind: str = "ggn", keep_graphs: bool | None = None):
        self.model, self.counters, self.kind = model, counters, kind
        self.arch, self.device, self.dtype = settings.arch, settings.device, settings.dtype
        self.keep_graphs = keep_graphs if kind == "ggn" else False
        self.size = len(pool)
        step = max(1, min(settings.batch_size, self.size))
        self.chunks = [{k: v.to(self.device) for k, v in collate(pool[list(range(i, min(i + step, self.size)))],
                                                                   self.arch.pad_id).items()}
                       for i in range(0, self.size, step)]
        self.graphs: dict[int, GGNGraph] = {}

    def _graph(self, i: int) -> GGNGraph:
        if i in self.graphs:
            return self.graphs[i]
        build = lambda: GGNGraph(self.model, self.chunks[i], self.arch, self.dtype, self.device)  # noqa: E731
        if self.keep_graphs is None:  # decided once, from the first chunk's graph
            graph, size = graph_bytes(build, list(self.model.parameters()))
            self.keep_graphs = size * len(self.chunks) <= self.GRAPH_MEMORY_SHARE * free_memory(self.device)
        else:
            graph = build()
        if self.keep_graphs:
            self.graphs[i] = graph
        return graph

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(vector)
        for i, batch in enumerate(self.chunks):
            n = len(batch["labels"])
            if self.kind == "ggn":
                total += self._graph(i).apply(vector, keep=bool(self.keep_graphs))
            else:  # hvp() differentiates the chunk's MEAN loss: times n gives the chunk's sum
                total += n * hvp(self.model, batch, self.arch, vector, self.dtype)
            bump(self.counters, "hvp")
            bump(self.counters, "hvp_examples", n)
        return total / self.size


def top_eigenvalue(op: Operator, start: torch.Tensor, iterations: int) -> tuple[float, int]:
    """Largest eigenvalue of a symmetric M by Lanczos (three-term recurrence): the top Ritz value of
    the tridiagonal T_k, and the number of products used.

    Runs all ``iterations`` products (stops early only if the Krylov space is invariant): a
    "the estimate stopped changing" rule stopped both power iteration (10 steps) and Lanczos
    (7 steps) at 105 on the default θ0, whose λ_max is ≥ 117 (the top Ritz value of the 25
    Arnoldi steps) — a plateau on the second eigenvalue. Like power iteration it needs two
    vectors of memory and approaches λ_max from below, but converges much faster when the top
    eigenvalues are close. Without re-orthogonalisation Lanczos may repeat converged Ritz
    values; the top one stays correct.
    """
    q_prev, q = torch.zeros_like(start), start / start.norm()
    alphas, betas, top, beta = [], [], float("nan"), 0.0
    for k in range(1, iterations + 1):
        w = op(q) - beta * q_prev
        alpha = torch.dot(w, q).item()
        w = w - alpha * q
        alphas.append(alpha)
        tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
        new = torch.linalg.eigvalsh(tri)[-1].item()
        beta = w.norm().item()
        if not math.isfinite(new) or beta <= 1e-12 * abs(new):
            return new, k
        top, q_prev, q = new, q, w / beta
        betas.append(beta)
    return top, iterations
