"""Pickles read without running them: plain data passes in every protocol, a pickle that names a function is
refused before the function is called (silhouette and pose datasets alike)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from allinone.evaluate.dataset import load_keypoints, load_silhouettes
from allinone.io.safe_pickle import UnsafePickle, load_data_pickle, pickle_globals


class _Touches:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_reads_back_in_every_protocol(tmp_path: Path, protocol: int):
    data = {"sils": np.arange(2 * 64 * 44, dtype=np.uint8).reshape(2, 64, 44), "n": np.float32(1.5),
            "names": ["a", ("b", 2)], "raw": b"\x00\x01", "set": {1, 2}}
    p = tmp_path / "d.pkl"
    p.write_bytes(pickle.dumps(data, protocol=protocol))
    got = load_data_pickle(p)
    assert np.array_equal(got["sils"], data["sils"]) and got["sils"].dtype == np.uint8
    assert got["n"] == np.float32(1.5) and got["names"] == ["a", ("b", 2)] and got["raw"] == b"\x00\x01"
    assert got["set"] == {1, 2}


@pytest.mark.parametrize("loader", [load_data_pickle, load_silhouettes, load_keypoints],
                         ids=["data", "silhouettes", "keypoints"])
def test_a_pickle_that_calls_a_function_is_refused_and_nothing_runs(tmp_path: Path, loader):
    marker = tmp_path / "ran"
    p = tmp_path / "seq.pkl"
    p.write_bytes(pickle.dumps([np.zeros((3, 17, 3), np.float32), _Touches(marker)]))
    with pytest.raises(UnsafePickle, match=r"asks for (posix|os|nt)\.system"):
        loader(p)
    assert not marker.exists()
    assert any(g.endswith(".system") for g in pickle_globals(p))  # named without running
    assert not marker.exists()


def test_pose_pickles_of_opengaits_form_read(tmp_path: Path):
    seq = np.random.default_rng(0).uniform(0, 300, (20, 17, 3)).astype(np.float32)
    p = tmp_path / "pose.pkl"
    p.write_bytes(pickle.dumps(seq))
    assert np.array_equal(load_keypoints(p), seq)
