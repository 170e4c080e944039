from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub: ultralytics reads this in its online check.
os.environ.setdefault("YOLO_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"test material not found at {SHARED} (../shared beside the repo)")
    return SHARED
