"""A live run's segments: files cut by wall time, the result video playable even when the process is killed
mid-write, and a live RunWriter that keeps an interrupted folder (status incomplete) instead of deleting it."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import av
import numpy as np
import pytest

from allinone.io.run_folder import RunWriter
from allinone.io.segments import Segments
from tests.conftest import REPO
from tests.helpers import decodable_frames


def _frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _frame(i: int) -> np.ndarray:
    f = np.zeros((64, 96, 3), np.uint8)
    f[:, : (i % 96) + 1] = (40, 200, 90)
    return f


def test_segments_roll_by_wall_time_and_list_what_they_wrote(tmp_path):
    clock = [0.0]
    with RunWriter(tmp_path, "r") as w:
        seg = Segments(w, "cam", "G-g_P-cam", 10.0, (96, 64), segment_s=5.0, clock=lambda: clock[0])
        for i in range(30):  # one frame per simulated second: segments of 5 s
            seg.roll(i)
            seg.write_mot(i, np.array([[1, 2, 11, 22]], np.float32), np.array([0.9]), np.array([7]))
            if i % 4 == 0:
                seg.write_event(json.dumps({"frame": i + 1}))
            seg.write_frame(i, _frame(i))
            clock[0] += 1.0
        entries = seg.close()
        run = w.finalize({"segments": entries})
    assert [e["index"] for e in entries] == list(range(6)) and all(e["complete"] for e in entries)
    assert [(e["first_frame"], e["last_frame"], e["frames"]) for e in entries] == \
        [(1 + 5 * k, 5 + 5 * k, 5) for k in range(6)]
    for e in entries:
        assert _frames(run / e["result_video"]) == 5
        rows = (run / e["tracks_file"]).read_text().splitlines()
        assert [int(r.split(",")[0]) for r in rows] == list(range(e["first_frame"], e["last_frame"] + 1))
        got = [json.loads(x)["frame"] for x in (run / e["events"]).read_text().splitlines()]
        assert got == [f + 1 for f in range(e["first_frame"] - 1, e["last_frame"]) if f % 4 == 0]
    assert not list(run.rglob(".*partial*")) and not list(run.rglob(".tmp-*"))
    assert not any("partial_video" in e for e in entries)


def test_the_video_being_written_plays_after_a_kill(tmp_path):
    # a child writes 120 frames (keyframes every 25 by x264's scene cut/keyint of the sink's encoder) and is killed
    # with SIGKILL while the segment is still open: the partial MP4 decodes up to its last complete fragment
    code = textwrap.dedent(f"""
        import os, sys, time
        import numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from allinone.io.segments import FragmentedSink
        s = FragmentedSink({str(tmp_path / "v.mp4")!r}, 25.0, (96, 64))
        for i in range(600):
            f = np.zeros((64, 96, 3), np.uint8); f[:, : (i % 96) + 1] = (40, 200, 90)
            s.write(f)
        time.sleep(3.0)  # the encoder thread has caught up
        print("written", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "written"
    finally:
        p.kill()
        p.wait()
    partials = list(tmp_path.glob(".tmp-*.mp4"))  # the sink's temporary name (io.run_folder.temp_beside)
    assert len(partials) == 1 and not (tmp_path / "v.mp4").exists()
    partial = partials[0]
    n = _frames(partial)
    assert 250 <= n <= 600  # everything up to the last fragment the muxer flushed


def test_the_open_segment_decodes_after_a_kill_at_a_random_moment(tmp_path):
    # a child writes frames at a live stream's pace (25 frames/s) and says how many it has handed over; it is killed
    # with SIGKILL at a random moment 1-4 s in: the open file decodes up to its last keyframe, which comes at least
    # every LiveConfig.keyframe_s, so it lacks at most that many seconds of frames plus the encoder's queue (8)
    # and delay (x264's frame threads: a few)
    from allinone.config import LiveConfig
    fps, queue, delay = 25.0, 8, 8
    code = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from allinone.io.segments import FragmentedSink
        s = FragmentedSink({str(tmp_path / "v.mp4")!r}, {fps}, (96, 64))
        t0 = time.monotonic()
        for i in range(100000):
            f = np.zeros((64, 96, 3), np.uint8); f[:, : (i % 96) + 1] = (40, 200, 90)
            s.write(f)
            print(i + 1, flush=True)
            time.sleep(max(0.0, t0 + (i + 1) / {fps} - time.monotonic()))
    """)
    rng = np.random.default_rng()
    at = float(rng.uniform(1.0, 4.0))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    written = 0
    try:
        t0 = None
        for line in p.stdout:
            written = int(line)
            t0 = t0 or time.monotonic()  # from the first frame: the import's time does not count
            if time.monotonic() - t0 >= at:
                break
    finally:
        p.kill()
        p.wait()
    [partial] = tmp_path.glob(".tmp-*.mp4")
    bound = round(fps * LiveConfig.keyframe_s) + queue + delay
    got = decodable_frames(partial)
    assert written - bound <= got <= written, (at, written, got, partial.stat().st_size)


def test_a_live_writer_keeps_an_interrupted_folder_as_incomplete(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with RunWriter(tmp_path, "live") as w:
            (w.path("events-000.jsonl")).write_text('{"frame": 1}\n')
            w.keep_if_interrupted({"live": {"cam": {"segments": [{"index": 0}]}}})
            raise KeyboardInterrupt
    run = tmp_path / "live"
    m = json.loads((run / "run.json").read_text())
    assert m["status"] == "incomplete" and "KeyboardInterrupt" in m["error"]
    assert m["live"]["cam"]["segments"] == [{"index": 0}]
    assert (run / "events-000.jsonl").read_text() == '{"frame": 1}\n'
    # a file run (no keep_if_interrupted) still leaves nothing behind
    with pytest.raises(RuntimeError):
        with RunWriter(tmp_path, "file") as w:
            w.path("x.txt").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live"]


def test_a_killed_live_folder_is_recovered_not_swept_even_without_its_journal(tmp_path):
    # a dead process's live folder whose journal was lost (only its files): the sweep of the next RunWriter keeps
    # it, finds its segments from the files, and finalizes it as incomplete; a dead file run's folder is removed
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    live = tmp_path / f".cam.partial-{dead}"
    (live / "tracks").mkdir(parents=True)
    for i in range(2):
        (live / f"events-00{i}.jsonl").write_text('{"frame": 1}\n{"frame": 2}\n')
    (tmp_path / f".file.partial-{dead}").mkdir()
    with RunWriter(tmp_path, "next"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam"]
    m = json.loads((tmp_path / "cam" / "run.json").read_text())
    segs = m["live"]["stream"]["segments"]
    assert m["status"] == "incomplete" and [(s["index"], s["events_written"]) for s in segs] == [(0, 2), (1, 2)]
