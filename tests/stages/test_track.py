"""ByteTracker on scripted detection streams: every expectation follows from the scenario and ByteTrack's rules."""
from __future__ import annotations

import numpy as np
import pytest

from allinone.config import TrackConfig
from allinone.records import Detections
from allinone.stages.track import ByteTracker, KalmanBoxFilter

CFG = TrackConfig()  # high 0.5, low 0.1, new track 0.6, buffer 30 frames at 30 fps


def box(cx: float, bottom: float, w: float = 60.0, h: float = 180.0) -> np.ndarray:
    return np.array([cx - w / 2, bottom - h, cx + w / 2, bottom], np.float32)


def frame(*items: tuple[np.ndarray, float]) -> Detections:
    if not items:
        return Detections.empty()
    return Detections(np.stack([b for b, _ in items]), np.array([s for _, s in items], np.float32))


def id_of(out: Detections, b: np.ndarray) -> int | None:
    """Track id reported for exactly this detector box, None when the box is not in the output."""
    rows = np.flatnonzero((out.xyxy == b[None]).all(axis=1))
    assert len(rows) <= 1
    return int(out.track_id[rows[0]]) if len(rows) else None


def check_output(out: Detections) -> None:
    assert out.track_id is not None and out.track_id.dtype == np.int64
    assert np.all(np.diff(out.track_id) > 0), "sorted by id, each id once"


def walk(x0: float, v: float, t: int) -> float:
    return x0 + v * t


@pytest.mark.parametrize("behind_score", [0.9, 0.35])
def test_crossing_people_keep_their_ids(behind_score: float) -> None:
    """A (near, bigger) walks right, B (farther, smaller) walks left; they overlap for about 10 frames. While they
    overlap B is either still detected confidently or only weakly (occluded): both must keep their ids."""
    tracker = ByteTracker(CFG, fps=30)
    ids_a, ids_b, overlapped = [], [], 0
    for t in range(70):
        a = box(walk(100, 6, t), 380)
        b = box(walk(500, -6, t), 375, 50, 150)
        overlap = abs((100 + 6 * t) - (500 - 6 * t)) < 55
        overlapped += overlap
        dets = [(a, 0.9), (b, behind_score if overlap else 0.85)]
        out = tracker(frame(*(dets[::-1] if t % 2 else dets)))  # detector order must not matter
        check_output(out)
        ids_a.append(id_of(out, a))
        ids_b.append(id_of(out, b))
    assert overlapped >= 8
    assert set(ids_a) == {ids_a[0]} and set(ids_b) == {ids_b[0]}  # seen in every frame, never switched
    assert {ids_a[0], ids_b[0]} == {1, 2}


def _gap_stream(tracker: ByteTracker, gap: int, before: int = 20, after: int = 10, v: float = 3.0):
    """A walks at v px/frame and is missed for `gap` frames; B stands still and is always seen.
    Returns A's reported ids per frame after the gap and B's id."""
    ids_a, ids_b = [], set()
    for t in range(before + gap + after):
        b = box(900, 400, 50, 160)
        a = box(walk(100, v, t), 380)
        visible = t < before or t >= before + gap
        dets = [(a, 0.9), (b, 0.8)] if visible else [(b, 0.8)]
        out = tracker(frame(*dets))
        check_output(out)
        ids_b.add(id_of(out, b))
        if t == before - 1:
            assert id_of(out, a) == 1
        if t >= before + gap:
            ids_a.append(id_of(out, a))
    return ids_a, ids_b


def test_short_occlusion_keeps_id() -> None:
    ids_a, ids_b = _gap_stream(ByteTracker(CFG, fps=30), gap=20)
    assert ids_a == [1] * 10  # re-found in the very first frame back
    assert ids_b == {2}


def test_long_occlusion_gets_new_id() -> None:
    ids_a, ids_b = _gap_stream(ByteTracker(CFG, fps=30), gap=45)
    # The old track is gone; the new one is unconfirmed in its first frame and takes the next id (3).
    assert ids_a == [None] + [3] * 9
    assert ids_b == {2}


@pytest.mark.parametrize("gap, same", [(11, True), (12, False)])
def test_buffer_boundary(gap: int, same: bool) -> None:
    """track_buffer 10 at 30 fps. ByteTrack flags a lost track when more than `buffer` frames passed since its
    last match, but drops it only at the end of the following frame, after that frame's matching: so a person
    missed for buffer + 1 frames is still re-found, one missed for buffer + 2 is not. A standing person (no
    motion for the filter to extrapolate) makes this exact."""
    cfg = TrackConfig(track_buffer=10)
    tracker = ByteTracker(cfg, fps=30)
    a = box(300, 400)
    ids = []
    for t in range(5 + gap + 3):
        visible = t < 5 or t >= 5 + gap
        ids.append(id_of(tracker(frame((a, 0.9)) if visible else frame()), a))
    assert ids[:5] == [1] * 5
    assert ids[5 + gap:] == ([1, 1, 1] if same else [None, 2, 2])


@pytest.mark.parametrize("fps, gap, same", [(60, 45, True), (30, 45, False), (15, 10, True), (15, 20, False)])
def test_buffer_scales_with_fps(fps: float, gap: int, same: bool) -> None:
    """track_buffer 30 means one second: 60 frames at 60 fps, 15 at 15 fps (speed per frame scaled to match)."""
    ids_a, _ = _gap_stream(ByteTracker(CFG, fps=fps), gap=gap, v=3.0 * 30 / fps)
    assert ids_a == ([1] * 10 if same else [None] + [3] * 9)


def test_buffer_length() -> None:
    assert ByteTracker(CFG, fps=60).buffer == 60
    assert ByteTracker(CFG, fps=25).buffer == 25
    assert ByteTracker(CFG, fps=29.97).buffer == 29  # rounds down
    assert ByteTracker(TrackConfig(track_buffer=90), fps=10).buffer == 30


def test_low_score_frame_keeps_id_through_second_association() -> None:
    tracker = ByteTracker(CFG, fps=30)
    for t in range(20):
        a = box(walk(100, 4, t), 380)
        score = 0.3 if t == 10 else 0.9
        out = tracker(frame((a, score)))
        check_output(out)
        # Reported in the weak frame too, with the weak box and its score.
        assert id_of(out, a) == 1, t
        if t == 10:
            assert out.confidence.tolist() == [pytest.approx(0.3)]


def test_low_score_box_does_not_revive_lost_track() -> None:
    """The second association only serves tracks that were tracked in the previous frame."""
    tracker = ByteTracker(CFG, fps=30)
    seen = []
    for t in range(16):
        a = box(walk(100, 4, t), 380)
        if 5 <= t < 8:
            out = tracker(frame())  # lost
        else:
            out = tracker(frame((a, 0.3 if t in (8, 9) else 0.9)))
        seen.append(id_of(out, a))
    assert seen == [1] * 5 + [None] * 5 + [1] * 6


def test_weak_detections_never_start_tracks() -> None:
    tracker = ByteTracker(CFG, fps=30)
    a, b = box(200, 380), box(600, 380)
    for t in range(20):
        # 0.3: second-association only; 0.55: confident but below new_track_threshold 0.6.
        out = tracker(frame((a, 0.3), (b, 0.55)))
        assert len(out) == 0
    # Once B becomes confident it starts a track; it was not born in the first frame so it shows from its second.
    assert id_of(tracker(frame((a, 0.3), (b, 0.7))), b) is None
    out = tracker(frame((a, 0.3), (b, 0.7)))
    assert id_of(out, b) == 1 and len(out) == 1


def test_ids_start_at_one_per_tracker_and_are_never_reused() -> None:
    first = ByteTracker(CFG, fps=30)
    people = [box(100 + 200 * i, 380) for i in range(3)]
    out = first(frame(*[(p, 0.9) for p in people]))
    assert out.track_id.tolist() == [1, 2, 3]
    second = ByteTracker(CFG, fps=30)
    out2 = second(frame((people[0], 0.9), (people[2], 0.9)))
    assert out2.track_id.tolist() == [1, 2]
    # Interleaved use: a spurious one-frame box in `first` burns id 4 (born unconfirmed, dropped next frame);
    # a real newcomer then gets 5 and shows from its second frame.
    ghost = box(1100, 380)
    first(frame(*[(p, 0.9) for p in people], (ghost, 0.9)))
    second(frame((people[0], 0.9), (people[2], 0.9)))
    first(frame(*[(p, 0.9) for p in people]))
    newcomer = box(700, 400)
    first(frame(*[(p, 0.9) for p in people], (newcomer, 0.9)))
    out = first(frame(*[(p, 0.9) for p in people], (newcomer, 0.9)))
    assert out.track_id.tolist() == [1, 2, 3, 5]
    assert id_of(out, newcomer) == 5
    assert second(frame((people[0], 0.9), (people[2], 0.9))).track_id.tolist() == [1, 2]


def test_tracks_born_after_first_frame_need_a_second_hit() -> None:
    tracker = ByteTracker(CFG, fps=30)
    tracker(frame())  # the first frame is empty, so nobody gets confirmed at birth
    a = box(300, 380)
    assert len(tracker(frame((a, 0.9)))) == 0
    assert id_of(tracker(frame((a, 0.9))), a) == 1


def test_empty_stream() -> None:
    tracker = ByteTracker(CFG, fps=25)
    for _ in range(5):
        out = tracker(Detections.empty())
        assert len(out) == 0 and out.xyxy.shape == (0, 4)
        assert out.track_id is not None and out.track_id.shape == (0,)


def test_returns_raw_detector_boxes() -> None:
    """Jittery boxes: the output is the detector's box bit for bit, not the smoothed filter state."""
    rng = np.random.default_rng(0)
    tracker = ByteTracker(CFG, fps=30)
    for t in range(30):
        a = box(walk(100, 5, t), 380) + rng.normal(0, 2, 4).astype(np.float32)
        out = tracker(frame((a, 0.8)))
        np.testing.assert_array_equal(out.xyxy, a[None])
        assert out.track_id.tolist() == [1]


def test_duplicate_of_lost_track_is_merged_into_the_older_track() -> None:
    """P walks right for 20 frames and vanishes; its lost track keeps coasting right. Q stands still ahead of P
    from frame 20 on, too far from P's prediction to be matched, so it becomes track 2. When P's coasting box
    covers Q's box (IoU > 0.85) the two are one person twice: the younger track (Q's) is dropped in that frame and
    Q's detections continue P's track 1 from the next frame."""
    tracker = ByteTracker(CFG, fps=30)
    q = box(250, 380)
    ids_q = []
    for t in range(45):
        if t < 20:
            out = tracker(frame((box(walk(100, 5, t), 380), 0.9)))
            assert out.track_id.tolist() == [1]
        else:
            ids_q.append(id_of(tracker(frame((q, 0.9))), q))
    assert ids_q[0] is None  # unconfirmed at birth
    k = ids_q.index(1)
    assert ids_q[1:k - 1] == [2] * (k - 2) and k - 2 >= 3
    assert ids_q[k - 1] is None  # the frame the duplicate was dropped
    assert ids_q[k:] == [1] * (len(ids_q) - k)


def test_kalman_filter_learns_constant_velocity() -> None:
    kf = KalmanBoxFilter()
    xyah = lambda t: np.array([[100 + 4.0 * t, 300 - 1.0 * t, 0.4, 180.0]])  # noqa: E731
    mean, cov = kf.initiate(xyah(0))
    for t in range(1, 40):
        mean, cov = kf.predict(mean, cov)
        mean, cov = kf.update(mean, cov, xyah(t))
    np.testing.assert_allclose(mean[0, 4:], [4.0, -1.0, 0.0, 0.0], atol=0.05)
    mean, _ = kf.predict(mean, cov)
    np.testing.assert_allclose(mean[0, :4], xyah(40)[0], atol=0.5)
    assert np.all(np.linalg.eigvalsh(cov[0]) > 0)


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf")])
def test_bad_fps(fps: float) -> None:
    with pytest.raises(ValueError):
        ByteTracker(CFG, fps=fps)
