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
