"""Benchmark (not a test): UnTrac scoring against an HF-Trainer gradient-ascent loop, and stage times.

    python scripts/bench.py [--reps 2] [--max-steps 256] [--eval-every 16] [--no-stages]

Protocol (issue 10): tiny T5 (d_model 128, 3+3 layers, d_ff 512, byte tokens), synthA's four
training datasets of 256 examples, batch 1, Adam 5e-5 constant, the 256-example test set evaluated
every ``--eval-every`` steps. Contestants, interleaved in every repetition so that a shared, busy
machine slows them alike:
- peer: ``Seq2SeqTrainer`` whose training loss is negated (the authors' recipe), on dataset1,
  ``--peer-threads`` torch threads (1, and 2 where there are 2 cores);
- reference: the straightforward loop (``unlearn.unlearn`` per dataset, fresh θ0 each), as before;
- untrac: ``methods.untrac.score_untrac`` (the fast path) at ``unlearn.workers`` 1 and auto.
UnTrac's steps/s = (datasets × steps) ÷ scoring wall seconds, evaluations included; the peer's and
the reference loop's = steps ÷ wall seconds on dataset1 (each dataset costs them the same). CPU seconds (this process and its workers) beside them.
Needs ``accelerate`` (``pip install -e '.[bench]'``). The peer lives here only, never in the package.
Writes outputs/bench/bench.md and prints it.
"""

import argparse
import copy
import dataclasses
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: progress bars would skew the timing

import torch

from untrac.config import Config, MethodConfig, ModelConfig, OptimConfig, UnlearnConfig
from untrac.data.prepare import load_task
from untrac.methods import Context
from untrac.methods.untrac import score_untrac
from untrac.models import build_model, load_tokenizer
from untrac.parallel import available_cores
from untrac.unlearn import UnlearnPlan, unlearn

PROTOCOL_MODEL = ModelConfig(d_model=128, num_layers=3, d_ff=512)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def peer(model, tokenizer, forget, test, steps: int, eval_every: int, threads: int) -> None:
    """The HF recipe: a Trainer that minimises −loss, evaluating the test set every ``eval_every``."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    class AscentTrainer(Seq2SeqTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
            loss = -loss if model.training else loss
            return (loss, outputs) if return_outputs else loss

    torch.set_num_threads(threads)
    out = tempfile.mkdtemp(prefix="peer-")
    args = Seq2SeqTrainingArguments(
        output_dir=out, per_device_train_batch_size=1, per_device_eval_batch_size=64, learning_rate=5e-5,
        lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, max_steps=steps,
        eval_strategy="steps", eval_steps=eval_every, save_strategy="no", logging_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0, optim="adamw_torch")
    trainer = AscentTrainer(model=model, args=args, train_dataset=forget, eval_dataset=test,
                            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    try:
        trainer.train()
    finally:
        torch.set_num_threads(1)
        shutil.rmtree(out, ignore_errors=True)


def compare(reps: int, max_steps: int, eval_every: int, peer_threads: list[int]) -> list[str]:
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(PROTOCOL_MODEL)
    theta0, arch = build_model(PROTOCOL_MODEL, tokenizer, seed=0)
    theta0.eval()
    task = load_task(Config().data, Config().testset, tokenizer, arch, Path(tempfile.gettempdir()))
    steps = min(max_steps, len(task.train["dataset1"]))
    schedule = UnlearnConfig(batch_size=1, epochs=1, eval_every=eval_every, max_steps=steps)
    inputs = Context(theta0=theta0, arch=arch, device=torch.device("cpu"), train=task.train, test=task.test,
                         method=MethodConfig(), optim=OptimConfig(), unlearn=schedule, seed=0)
    n_sets = len(task.train)

    def reference():  # one dataset: each costs the same in this loop (θ0 is evaluated for every one)
        unlearn(copy.deepcopy(theta0), task.train["dataset1"], task.test,
                UnlearnPlan(arch=arch, device=inputs.device, optim=inputs.optim, schedule=schedule, seed=0))

    def fast(workers: str):
        return lambda: score_untrac(dataclasses.replace(inputs, counters={},
                                                        unlearn=dataclasses.replace(schedule, workers=workers)))

    contestants = {f"peer HF Seq2SeqTrainer, {t} thread(s)": (
        lambda t=t: peer(copy.deepcopy(theta0), tokenizer, task.train["dataset1"], task.test["test"], steps,
                         eval_every, t), steps) for t in peer_threads}
    contestants["reference loop (before), 1 thread"] = (reference, steps)
    contestants["untrac workers=1, 1 thread"] = (fast("1"), steps * n_sets)
    if len(available_cores()) > 1:
        contestants[f"untrac workers=auto ({len(available_cores())}×1 thread)"] = (fast("auto"), steps * n_sets)
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in contestants}
    for rep in range(reps):
        for name, (fn, n) in contestants.items():
            wall, cpu = timed(fn)
            rates[name].append((n / wall, n / cpu))
            print(f"rep {rep + 1}: {name}: {n / wall:.2f} steps/s wall, {n / cpu:.2f} steps/CPU-s", flush=True)
    peer_best = {name: max(w for w, _ in r) for name, r in rates.items() if name.startswith("peer")}
    lines = [f"Protocol: T5 d_model 128, 3+3 layers; {steps} steps per dataset at batch 1, Adam 5e-5, test set "
             f"(256) every {eval_every} steps; {reps} interleaved repetitions; cores available "
             f"{len(available_cores())}, load average {os.getloadavg()[0]:.1f} at the end.", "",
             "| contestant | steps/s wall (each rep) | steps per CPU-s | ratio to peer 1 thread (best/best) |",
             "|---|---|---|---|"]
    base = peer_best.get("peer HF Seq2SeqTrainer, 1 thread(s)")
    for name, r in rates.items():
        best = max(w for w, _ in r)
        ratio = f"{best / base:.2f}×" if base else "-"
        # Workers are children of the fork server, not of this process: their CPU time is not seen here.
        cpu = "n/a" if "auto" in name else " / ".join(f"{c:.2f}" for _, c in r)
        lines.append(f"| {name} | {' / '.join(f'{w:.2f}' for w, _ in r)} | {cpu} | {ratio} |")
    return lines


def stages(cache: Path) -> list[str]:
    """The default run (``python -m untrac.run``) from an empty cache, then with θ0 and θ−Z cached."""
    from untrac.pipeline import run_experiment

    shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for label in ("empty cache", "models cached"):
        shutil.rmtree(cache / "pieces", ignore_errors=True)  # the scoring itself is measured both times
        start = time.perf_counter()
        results = run_experiment(Config(cache_dir=str(cache), threads=1))
        total = time.perf_counter() - start
        seconds = {k: round(v, 1) for k, v in results.seconds.items()}
        rows.append(f"| {label} | {total:.1f} | {seconds} |")
    return ["", "Default run (`python -m untrac.run`, threads 1, default unlearn.workers):", "",
            "| cache | wall s | stage seconds |", "|---|---|---|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=256, help="steps per dataset (256 = the protocol)")
    parser.add_argument("--eval-every", type=int, default=16)
    parser.add_argument("--peer-threads", default="1,2")
    parser.add_argument("--no-stages", action="store_true")
    parser.add_argument("--cache", default="outputs/bench-cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    threads = [t for t in map(int, args.peer_threads.split(",")) if t <= len(available_cores())]
    lines = ["# Benchmark", "", f"torch {torch.__version__}", "",
             *compare(args.reps, args.max_steps, args.eval_every, threads)]
    if not args.no_stages:
        lines += stages(Path(args.cache))
    out = Path("outputs/bench/bench.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
