import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOTIONCLIP_SHARED", ROOT.parent / "shared"))

# 2-core CI machine: keep torch from oversubscribing when pytest and decoders share it
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the project root; tests that need it skip on a user's fresh clone."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (shared data is only beside the project in CI/dev)")
    return SHARED


@pytest.fixture(scope="session")
def parity_dir(shared_dir) -> Path:
    d = shared_dir / "fixtures" / "reference-parity"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    return d


@pytest.fixture(scope="session")
def media_dir(shared_dir) -> Path:
    d = shared_dir / "media"
    if not d.is_dir():
        pytest.skip(f"{d} not present")
    return d


if os.environ.get("EMOTIONCLIP_FAULT_LOG"):  # native crashes in a long test process: where it died
    import faulthandler

    _FAULT_LOG = open(os.environ["EMOTIONCLIP_FAULT_LOG"], "w")  # noqa: SIM115 - open for the session
    faulthandler.enable(file=_FAULT_LOG, all_threads=True)
