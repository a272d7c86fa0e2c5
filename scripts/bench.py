"""Benchmarks (not tests): seconds per training/unlearning step and per method on the default job.

    python scripts/bench.py [--methods untrac,graddot] [--cache outputs/bench-cache]

Writes outputs/bench/bench.md and prints it. The first method pays for θ0 and the ground truth;
the per-method figures below are from the warm cache.
"""

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import torch

from untrac.config import Config, MethodConfig, ModelConfig, UnlearnConfig
from untrac.data.collate import collate
from untrac.losses import batch_loss
from untrac.methods import registry
from untrac.pipeline import run_experiment
from untrac.data.prepare import load_task
from untrac.models import build_model, load_tokenizer
from untrac.train import sample_order

PAPER_SCHEDULES = {"untrac": UnlearnConfig(batch_size=1, epochs=1, eval_every=32),
                   "untrac_inv": UnlearnConfig(batch_size=256, epochs=5, eval_every=1)}


def step_ms(preset: str, batch_size: int, steps: int = 30) -> float:
    model_cfg = ModelConfig(name=preset, arch="seq2seq" if preset == "t5_tiny" else "causal")
    tokenizer = load_tokenizer(model_cfg)
    model, arch = build_model(model_cfg, tokenizer, seed=0)
    task = load_task(Config().data, Config().testset, tokenizer, arch, Path("outputs/cache"))
    pool = task.train["dataset1"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [collate(pool[idx], arch.pad_id) for idx in sample_order(len(pool), steps + 5, batch_size, 0)]
    for i, batch in enumerate(batches):
        if i == 5:  # the first steps warm up allocator and kernels
            start = time.perf_counter()
        loss = batch_loss(model, batch, arch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(registry()))
    parser.add_argument("--cache", default="outputs/bench-cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    lines = ["# Benchmarks", "", f"torch {torch.__version__}, threads {torch.get_num_threads()}", "",
             "| model | batch | ms / step |", "|---|---|---|"]
    for preset in ("t5_tiny", "opt_tiny"):
        for batch_size in (1, 8):
            lines.append(f"| {preset} | {batch_size} | {step_ms(preset, batch_size):.1f} |")
    rows = []
    for name in args.methods.split(","):
        cfg = Config(method=MethodConfig(name=name), unlearn=PAPER_SCHEDULES.get(name, UnlearnConfig()),
                     cache_dir=args.cache, threads=1)
        start = time.perf_counter()
        results = run_experiment(cfg)
        rows.append({"method": name, "wall_s": time.perf_counter() - start,
                     "score_s": results.seconds["score"], "train_s": results.seconds.get("train", 0.0),
                     "forward_backward": results.counters.get("forward_backward"),
                     "hvp": results.counters.get("hvp")})
    lines += ["", "Default job (tiny T5, synthA), seconds; train_s > 0 means models were trained in that call:", "",
              pd.DataFrame(rows).round(2).to_markdown(index=False), ""]
    out = Path("outputs/bench/bench.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
