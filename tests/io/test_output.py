from __future__ import annotations

import json

import numpy as np
import pytest

from allinone.errors import UserError
from allinone.io.run_folder import RunWriter, sha256_file


def test_run_folder_appears_only_when_finalized(tmp_path):
    w = RunWriter(tmp_path, "r1")
    (w.path("a/b.txt")).write_text("x")
    assert not (tmp_path / "r1").exists()
    assert w.dir.name.startswith(".r1.partial")
    w.finalize({"version": 1})
    assert (tmp_path / "r1/a/b.txt").read_text() == "x"
    assert json.loads((tmp_path / "r1/run.json").read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r1"]


def test_failed_run_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with RunWriter(tmp_path, "r1") as w:
            w.path("x.txt").write_text("partial")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_explicit_name_is_refused_default_name_is_suffixed(tmp_path):
    (tmp_path / "r1").mkdir()
    with pytest.raises(UserError, match="exists"):
        RunWriter(tmp_path, "r1")
    w = RunWriter(tmp_path)
    first = w.final
    first.mkdir()
    w2 = RunWriter(tmp_path)
    assert w2.final.name == first.name + "-2"


def test_unwritable_output_is_a_user_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("I am a file")
    with pytest.raises(UserError, match="file.txt"):
        RunWriter(blocker / "sub")


def test_mot_rows_are_one_based_xywh_sorted_by_id_within_a_frame(tmp_path):
    w = RunWriter(tmp_path, "r")
    mot = w.mot_writer("t.txt")
    mot.write(0, np.array([[100, 50, 150, 170], [10, 20, 30, 60]], np.float32), np.array([0.7, 0.9]),
              np.array([2, 1]))
    mot.write(1, np.array([[12, 20, 32, 60]], np.float32), np.array([0.8]), np.array([1]))
    mot.close()
    lines = (w.dir / "t.txt").read_text().splitlines()
    assert lines == ["1,1,10.00,20.00,20.00,40.00,0.9000,-1,-1,-1",
                     "1,2,100.00,50.00,50.00,120.00,0.7000,-1,-1,-1",
                     "2,1,12.00,20.00,20.00,40.00,0.8000,-1,-1,-1"]
    w.abort()


def test_sha256_matches_known_digest(shared):
    # the digest published in ../shared/README.md
    assert sha256_file(shared / "weights/yolox_nano.onnx") == \
        "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd"
