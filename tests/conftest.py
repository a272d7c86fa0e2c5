"""Shared test fixtures: where the read-only shared data lives, and tiny float64 models."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip where it is absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent: the real data files are not available here")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are overhead-bound; one thread each keeps tests fast on a shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def compose_config(*overrides: str, hydra: bool = False):
    """The config ``python -m untrac.run OVERRIDES`` composes from the real conf/, untyped (a DictConfig;
    ``untrac.checks.typed`` types and validates it); ``hydra=True`` keeps Hydra's node (sweeper, choices).
    The one place tests compose: the ``compose`` fixture, or imported by helper modules that are no test."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from untrac.run import register_configs

    register_configs()
    GlobalHydra.instance().clear()  # a failed composition elsewhere may have left one initialised
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(scope="session")
def compose():
    """``compose("method=graddot", ...)``: see ``compose_config``."""
    return compose_config
