"""Reference HIF with the exact inverse: ĝ_Zᵀ (G + λI)⁻¹ ḡ_Z' by conjugate gradients (scipy), on
the θ0 a run would use (same config, same cache, same Hessian pool), to set beside the numbers of
``method=hif_lissa`` / ``method=hif_arnoldi`` (methods/hif.py's target, DESIGN §2).

    python scripts/hif_exact.py [hydra overrides, e.g. seed=1 device=cuda] [--maxiter N] [--rtol R]

Prints one JSON object: CG iterations and final relative residual, the exact influence per
(training dataset, test subset), and GradDot with normalised training gradients (the λ → ∞ limit,
up to 1/λ) for orientation. Each CG step is one product with G over the whole pool: on the
default tiny T5 that is ≈ 6–40 s on a shared CPU, and CG needs hundreds of steps at λ = 0.01
(κ ≈ 1e4), so run it on a GPU or with a larger damping.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, cg

from untrac.methods.grads import GradientSettings, mean_gradient, mean_unit_gradient, trainable
from untrac.methods.hessian import PoolOperator
from untrac.paper.plan import compose_run
from untrac.pipeline import Experiment

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--maxiter", type=int, default=2000)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--every", type=int, default=25,
                        help="log the residual and the influences every N CG steps (one extra product each)")
    args = parser.parse_args()
    cfg = compose_run(["method=hif_lissa", *args.overrides], CONF)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    exp = Experiment(cfg)
    model = exp.trained(cfg.seed).to(exp.device).eval()
    pool = exp.hessian_pool(cfg.method.hessian_examples, cfg.seed)  # run 0's pool, as the pipeline draws it
    chunks = GradientSettings(exp.arch, exp.device, cfg.method.hessian_batch_size, cfg.model.dtype)
    op = PoolOperator(model, pool, chunks)
    lam, like = cfg.method.damping, trainable(model)[0]
    dim = sum(p.numel() for p in trainable(model))

    def matvec(x):  # scipy works in float64 on the CPU; G in the model's dtype on its device
        y = op(torch.from_numpy(np.ascontiguousarray(x)).to(like))
        return y.double().cpu().numpy() + lam * x

    system = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    settings = GradientSettings(exp.arch, exp.device, cfg.method.per_example_batch, cfg.model.dtype)
    train = {z: mean_unit_gradient(model, ds, settings).double().cpu().numpy() for z, ds in exp.task.train.items()}
    out = {"damping": lam, "pool_examples": len(pool), "cg": {}, "exact": {}, "graddot_normalised": {}}
    for s, ds in exp.task.test.items():
        v = mean_gradient(model, ds, settings).double().cpu().numpy()
        steps = [0]

        def progress(xk, s=s, v=v):  # a long solve on a CPU: show where it stands, it may be stopped
            steps[0] += 1
            if steps[0] % args.every == 0:
                residual = np.linalg.norm(system.matvec(xk) - v) / np.linalg.norm(v)
                values = {z: round(float(g @ xk), 6) for z, g in train.items()}
                print(json.dumps({"subset": s, "cg_step": steps[0], "relative_residual": residual, "influence": values}),
                      file=sys.stderr, flush=True)

        x, info = cg(system, v, rtol=args.rtol, maxiter=args.maxiter, callback=progress)
        out["cg"][s] = {"iterations": steps[0], "converged": info == 0,
                        "relative_residual": float(np.linalg.norm(system.matvec(x) - v) / np.linalg.norm(v))}
        for z, g in train.items():
            out["exact"][f"{z}|{s}"] = float(g @ x)
            out["graddot_normalised"][f"{z}|{s}"] = float(g @ v)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
