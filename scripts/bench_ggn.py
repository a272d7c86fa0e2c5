"""Seconds per product with the HIF operator G (hessian.PoolOperator, the GGN over the pool) on the
θ0 a run would use, with each chunk's graph recomputed per product and kept between products.

    python scripts/bench_ggn.py [hydra overrides, e.g. data=synthB cache_dir=...]

Prints one line per mode: the first product (it builds the kept graphs), the mean of the next two,
the largest difference from the recomputed product (0.0: the same numbers) and the peak RSS.
"""

import resource
import sys
import time
from pathlib import Path

import torch

from untrac.methods.grads import GradientSettings, trainable
from untrac.methods.hessian import PoolOperator
from untrac.paper.plan import compose_run
from untrac.pipeline import Experiment

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    cfg = compose_run(["method=hif_lissa", *sys.argv[1:]], CONF)
    torch.set_num_threads(cfg.threads or 1)
    exp = Experiment(cfg)
    model = exp.trained(cfg.seed).to(exp.device).eval()
    pool = exp.hessian_pool(cfg.method.hessian_examples, cfg.seed)  # run 0's pool, as the pipeline draws it
    v = torch.randn(sum(p.numel() for p in trainable(model)), generator=torch.Generator().manual_seed(0))
    reference = None
    chunks = GradientSettings(exp.arch, exp.device, cfg.method.hessian_batch_size, cfg.model.dtype)
    for keep in (False, True):
        op = PoolOperator(model, pool, chunks, keep_graphs=keep)
        start = time.perf_counter()
        op(v)
        first, start = time.perf_counter() - start, time.perf_counter()
        products = [op(v), op(v)]
        later = (time.perf_counter() - start) / 2
        reference = products[0] if reference is None else reference
        diff = max((p - reference).abs().max().item() for p in products)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"graphs {'kept' if keep else 'recomputed'}: first {first:.2f} s, then {later:.2f} s per product "
              f"(pool {len(pool)}, chunks of {cfg.method.hessian_batch_size}); max |diff| {diff:.1e}; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
