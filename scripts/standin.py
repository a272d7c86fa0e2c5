"""Build (or find in the cache) the pretrained stand-in of ``model=t5_standin`` and print its entry.

    make standin                                                    # the preset's stand-in
    PYTHONPATH=src .venv/bin/python scripts/standin.py model.pretrain.seed=1

Takes ``python -m untrac.run``'s overrides (cache_dir, device, model.*; it pretrains on one thread). The stand-in is the
store entry ``<cache_dir>/pretrained/<key>`` (model.safetensors, train_losses.json, pretrain.json with
its seconds and held-out knowledge); any run with ``model=t5_standin`` builds the same entry on
first use. Pretraining: untrac.pretrain; corpus and tokenizer: untrac.data.standin.
"""

import logging
import sys

from untrac.cache import Cache
from untrac.errors import UntracError
from untrac.models import load_tokenizer, resolve_device
from untrac.paper.plan import compose_run
from untrac.store import ModelStore


def main(overrides: list[str]) -> None:
    # Off a terminal the pretraining loop reports through logging; without a handler its 20 minutes are silent.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = compose_run(["model=t5_standin", *overrides])
    store = ModelStore(Cache(cfg.cache_dir), resolve_device(cfg.device))
    path = store.pretrained(cfg.model, load_tokenizer(cfg.model))
    print(path)
    print((path / "pretrain.json").read_text())


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UntracError as err:
        sys.exit(f"standin: error: {err}")
