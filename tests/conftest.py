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


@pytest.fixture(scope="session")
def random_gaitbase(tmp_path_factory) -> Path:
    """A randomly initialised GaitBase saved as an OpenGait checkpoint (no real one is available here)."""
    import torch

    from allinone.gait.checkpoint import save_gaitbase_checkpoint
    from allinone.gait.gaitbase import GaitBase
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "GaitBase_random.pt"
    save_gaitbase_checkpoint(GaitBase(class_num=7), path)
    return path
