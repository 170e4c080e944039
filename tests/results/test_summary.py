"""The console table after a run, from a run.json built by hand."""
from __future__ import annotations

from pathlib import Path

from allinone.results.summary import console_summary


def _manifest(threshold: dict) -> dict:
    def m(track, status, identity, distance, reason):
        return {"probe_video": "cam1", "probe_track": track, "status": status, "identity": identity,
                "distance": distance, "reason": reason, "ranking": []}
    return {"threshold": threshold, "report": "report.html",
            "matches": [m(1, "match", "Ann", 0.0312, None), m(2, "unknown", None, 0.0401, "taken"),
                        m(3, "unknown", None, 0.9, "no_candidate"), m(4, "too_short", None, None,
                                                                       "too_few_silhouettes")]}


def test_table_says_who_matched_why_not_and_the_threshold_basis():
    text = console_summary(_manifest({"value": 0.035, "basis": "auto", "impostor_pairs": 6, "far": 0.01}),
                           Path("output/r1"))
    lines = text.splitlines()
    assert lines[0].split() == ["probe", "person", "decision", "distance", "threshold", "basis"]
    row = {line.split()[1]: line for line in lines[1:5]}
    assert "→ Ann" in row["P1"] and "0.0312" in row["P1"]
    assert "unknown" in row["P2"] and "seen at the same time" in row["P2"] and "0.0401" in row["P2"]
    assert "no identity within the threshold" in row["P3"]
    assert "too short" in row["P4"] and "—" in row["P4"]
    assert all("0.035" in r and "auto (6 impostor pairs, FAR 0.01)" in r for r in row.values())
    # columns line up: every row's decision starts where the header's does
    col = lines[0].index("decision")
    assert all(r[col - 2:col] == "  " and r[col] != " " for r in lines[1:5])
    assert lines[5] == "1 matched, 2 unknown, 1 too short"
    assert lines[7] == f"report: {Path('output/r1/report.html')}"


def test_threshold_fields_added_later_or_missing_do_not_break_it():
    text = console_summary(_manifest({"value": 0.5, "basis": "calibrated", "file": "/x/ckpt.calibration.json",
                                      "fpir": {"target": 0.01}, "new_field": [1, 2]}), "out")
    assert "calibrated (ckpt.calibration.json)" in text
    text = console_summary(_manifest({}), "out")  # nothing known about the threshold
    assert "?" in text.splitlines()[1]


def test_track_only_run_prints_nothing_but_leaves_the_folder_line_to_the_cli():
    assert console_summary({"videos": []}, "out") == ""


def test_the_threshold_line_names_the_evidence_and_a_calibration_file_found_beside_the_checkpoint(tmp_path):
    # calibrate wrote <stem>.calibration.json beside the checkpoint; a later run takes it without being told: the
    # console says so, with the file, and how much of the evidence is the file's
    import numpy as np

    from allinone.decide.calibration import beside, find_calibration, impostor_record, write_calibration
    from allinone.decide.threshold import resolve_threshold
    from allinone.records import Embedding, Identity
    ckpt = tmp_path / "model.pt"
    rec = {"checkpoint_sha256": "ab" * 32, "metric": "euc", "impostor": impostor_record(np.arange(1, 201.0), 5)}
    path = write_calibration(beside(ckpt), rec)
    cal = find_calibration(None, str(ckpt), "ab" * 32, "euc")

    def emb(track, pos):
        f = np.zeros((4, 2), np.float32)
        f[0] = pos
        return Embedding("g", track, f, 30, 0, 99)
    idents = [Identity(f"G{i}", (emb(i, 10.0 * i),)) for i in range(1, 4)]
    t = resolve_threshold(None, "euc", [m for i in idents for m in i.members], idents, [], target_fpir=0.01,
                          min_overlap=5, min_frames=10, calibration=cal)
    text = console_summary(_manifest(t.to_json()), tmp_path)
    line = next(x for x in text.splitlines() if x.startswith("threshold "))
    assert str(path) in line and "found beside the checkpoint" in line and "200 from calibration file" in line
    assert "203 impostor pairs" in line and "3 from this run" in line and "independent" in line


def test_a_long_run_shows_its_first_hundred_people_and_counts_all():
    rows = [{"probe_video": "cam", "probe_track": t, "status": "match" if t % 3 else "unknown",
             "identity": "Ann" if t % 3 else None, "distance": 0.01, "reason": None if t % 3 else "no_candidate"}
            for t in range(1, 10_001)]
    lines = console_summary({"threshold": {"value": 0.02, "basis": "user"}, "matches": rows},
                            Path("o/r")).splitlines()
    people = [x for x in lines if x.startswith("cam ")]
    assert [x.split()[1] for x in people] == [f"P{t}" for t in range(1, 101)]
    assert "… and 9,900 more people" in lines[101] and "matches.csv" in lines[101]
    assert lines[102] == "6667 matched, 3333 unknown, 0 too short"  # the counts are of every decision
