"""A gait dataset in OpenGait's layout: ROOT/<id>/<type>/<view>/*.pkl and a partition JSON.

Sequences are listed exactly as OpenGait's DataSet does for testing: the partition's TEST_SET ids that exist under
ROOT, in the partition's order; types and views sorted; in each sequence folder the .pkl files sorted, the first one
being the silhouettes (OpenGait feeds ``ipts[0]`` to the silhouette models).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allinone.errors import UserError, read_json
from allinone.io.safe_pickle import load_data_pickle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sequence:
    """One sequence of the test set: its label, type, view and silhouette file (relative to the root)."""

    label: str
    type: str
    view: str
    path: str  # relative to the dataset root, '/'-separated


def read_partition(path: Path) -> dict:
    part = read_json(path, "partition JSON")
    if not isinstance(part, dict) or not isinstance(part.get("TEST_SET"), list):
        raise UserError("a partition JSON needs a TEST_SET list (and usually TRAIN_SET)", path)
    for key in ("TEST_SET", "TRAIN_SET", "PROBE_SET"):
        ids = part.get(key)
        if ids is None:
            continue
        bad = [x for x in ids if isinstance(x, bool) or not isinstance(x, (str, int))] \
            if isinstance(ids, list) else [ids]
        if bad or (isinstance(ids, list) and any(str(x) in ("", ".", "..") or "/" in str(x) for x in ids)):
            raise UserError(f"partition JSON: {key} must be a list of ids (strings or numbers), it holds "
                            f"{(bad or ids)[0]!r}"[:300], path)
    if not part["TEST_SET"]:
        raise UserError("partition JSON: TEST_SET is empty (no ids to evaluate)", path)
    return part


def list_sequences(root: Path, partition: dict) -> list[Sequence]:
    """The TEST_SET sequences under ``root`` in OpenGait's order."""
    if not root.is_dir():
        raise UserError("dataset folder not found", root)
    present = set(os.listdir(root))
    ids = [str(x) for x in partition["TEST_SET"] if str(x) in present]
    if not ids:
        raise UserError("none of the partition's TEST_SET ids is a folder here", root)
    missing = [str(x) for x in partition["TEST_SET"] if str(x) not in present]
    if missing:  # OpenGait drops them too, but a result over fewer ids must say so
        log.warning("%s: %d of the partition's %d TEST_SET ids are not in the dataset and are left out: %s", root,
                    len(missing), len(partition["TEST_SET"]), ", ".join(missing[:10])
                    + (f", … ({len(missing) - 10} more)" if len(missing) > 10 else ""))
    out = []
    for lab in ids:
        for typ in sorted(os.listdir(root / lab)):
            if not (root / lab / typ).is_dir():
                continue
            for vie in sorted(os.listdir(root / lab / typ)):
                folder = root / lab / typ / vie
                if not folder.is_dir():
                    continue
                pkls = sorted(f for f in os.listdir(folder) if f.endswith(".pkl"))
                if pkls:
                    out.append(Sequence(lab, typ, vie, f"{lab}/{typ}/{vie}/{pkls[0]}"))
    return out


def load_keypoints(path: Path) -> np.ndarray:
    """A sequence's poses as OpenGait's pose pickles hold them: float [T, 17, 3] (x, y, confidence), T >= 1.
    UnsafePickle for a pickle that asks for more than arrays and containers (nothing of it runs)."""
    seq = np.asarray(load_data_pickle(path))
    if seq.ndim != 3 or seq.shape[1:] != (17, 3) or seq.dtype.kind != "f":
        raise ValueError(f"expected float [T, 17, 3] keypoints (x, y, confidence), got {seq.dtype} {seq.shape}")
    if len(seq) == 0 or not np.isfinite(seq).all():
        raise ValueError("empty sequence or non-finite keypoints")
    return seq.astype(np.float32, copy=False)


def load_silhouettes(path: Path) -> np.ndarray:
    """A sequence's silhouettes: uint8 [T, 64, 64] or already cut [T, 64, 44], T >= 1. ValueError otherwise;
    UnsafePickle (a UserError) for a pickle that asks for more than arrays and containers (nothing of it runs)."""
    seq = load_data_pickle(path)
    seq = np.asarray(seq)
    if seq.ndim != 3 or seq.shape[1:] not in ((64, 64), (64, 44)):
        raise ValueError(f"expected [T, 64, 64] or [T, 64, 44] silhouettes, got {seq.dtype} {seq.shape}")
    if len(seq) == 0:
        raise ValueError("empty sequence (no frames)")
    if seq.dtype != np.uint8:
        raise ValueError(f"{seq.dtype} silhouettes; OpenGait's pretreatment writes uint8 0..255")
    return seq
