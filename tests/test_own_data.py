"""README "Your own model and data": its two commands, run as written on tiny checkpoints saved
with ``save_pretrained`` and small data files, then their outputs checked."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from untrac.record import EXAMPLES, SUMMARY, RunRecord

REPO = Path(__file__).resolve().parents[1]
TOPICS = {"news": "Today the {} council voted", "code": "def f{}(): return", "questions": "What is {} plus one"}


def readme_commands() -> list[list[str]]:
    """The ``python -m untrac.run`` commands of the README section, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [shlex.split(block.replace("\\\n", " ")) for block in blocks]


def save_models(root: Path) -> None:
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    causal = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64,
                                        bos_token_id=1, eos_token_id=1, pad_token_id=0))
    seq2seq = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                  num_heads=2, decoder_start_token_id=0))
    for name, model in (("my_causal_lm", causal), ("my_seq2seq_lm", seq2seq)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)


def save_data(root: Path) -> None:
    for name, prompt in TOPICS.items():
        rows = [{"prompt": prompt.format(i), "target": f" {i + 1}"} for i in range(8 if name != "questions" else 6)]
        with open(root / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        pd.DataFrame(rows).to_csv(root / f"{name}.csv", index=False)


@pytest.mark.slow
def test_readme_own_model_and_data_commands(tmp_path):
    commands = readme_commands()
    assert [cmd[:3] for cmd in commands] == [["python", "-m", "untrac.run"]] * 2
    save_models(tmp_path)
    save_data(tmp_path)
    for cmd, method in zip(commands, ("untrac_inv", "graddot")):
        assert f"method={method}" in cmd and "groundtruth.mode=none" in cmd
        proc = subprocess.run([sys.executable, *cmd[1:], "threads=1"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (out,) = [p for p in (tmp_path / "outputs" / "runs").glob(f"*/*_{method}")]
        run = RunRecord.load(out)  # the run reads back whole: typed config, frames, metrics
        assert run.config.method.name == method and run.truth.empty
        influence = run.influence
        final = influence[influence.is_final].set_index("train_dataset").influence
        assert set(final.index) == {"news", "code"} and final.notna().all()
        summary = (out / SUMMARY).read_text()
        assert "ranked by influence" in summary and "No correlations: groundtruth.mode=none" in summary
        first = final.idxmax()  # the ranking puts the higher influence first
        assert re.search(rf"\| {method}\s*\| questions\s*\| {first} \(", summary)
        assert run.correlations.empty
        examples = run.examples
        assert list(examples.columns) == list(EXAMPLES.columns)
        assert len(examples) == 5 and examples.score.is_monotonic_decreasing
        # same sign as influence.csv: a dataset's influence is its examples' mean, so the best example scores at least it
        assert examples.score.iloc[0] >= final.max() - 1e-9
        row = examples.iloc[0]
        source = pd.read_csv(tmp_path / f"{row.train_dataset}.csv")  # the same rows as the .jsonl files
        first = 2 if f"{row.train_dataset}.csv" in " ".join(cmd) else 1  # CSV: the header is line 1
        assert str(source.prompt[row.example - first]).strip() in row.text  # the row's line in the file
