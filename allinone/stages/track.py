"""ByteTrack multi-person tracking (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection
Box", ECCV 2022), written over flat numpy arrays: one row per live track, batched Kalman steps, ``lap`` for the
assignments.

Per frame: predict every confirmed or lost track with a constant-velocity Kalman filter; match confident
detections to them by IoU (optionally weighted by the detection score); give the tracks still unmatched a second
chance with the weak detections (occluded people score low); confirm last frame's newborn tracks with the
confident leftovers; start tracks from what is still left; forget tracks lost for longer than the buffer.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from allinone.config import TrackConfig
from allinone.records import Detections

log = logging.getLogger(__name__)

TRACKED, LOST = 1, 2
# A tracked and a lost track whose boxes overlap more than this (IoU distance below it) are one person twice.
DUPLICATE_IOU_DISTANCE = 0.15


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [n, 4] and b [m, 4] (xyxy, continuous coordinates) -> [n, m]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def assign(cost: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment ignoring pairs that cost more than ``limit``.

    cost [n, m] -> (rows [k], cols [k]) of the matched pairs, rows ascending.
    """
    import lap

    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, x, _ = lap.lapjv(np.ascontiguousarray(cost, np.float64), extend_cost=True, cost_limit=limit)
    rows = np.flatnonzero(x >= 0)
    return rows, x[rows].astype(np.int64)


def unmatched(n: int, matched: np.ndarray) -> np.ndarray:
    """Boolean mask [n] of the positions not in ``matched``."""
    mask = np.ones(n, bool)
    mask[matched] = False
    return mask


def xyxy_to_xyah(xyxy: np.ndarray) -> np.ndarray:
    """[n, 4] corners -> [n, 4] (center x, center y, width / height, height)."""
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return np.stack([xyxy[:, 0] + wh[:, 0] / 2, xyxy[:, 1] + wh[:, 1] / 2, wh[:, 0] / wh[:, 1], wh[:, 1]], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """[n, >=4] (center x, center y, width / height, height, ...) -> [n, 4] corners."""
    half_w = xyah[:, 2] * xyah[:, 3] / 2
    half_h = xyah[:, 3] / 2
    return np.stack([xyah[:, 0] - half_w, xyah[:, 1] - half_h, xyah[:, 0] + half_w, xyah[:, 1] + half_h], axis=1)


class KalmanBoxFilter:
    """Constant-velocity Kalman filter on boxes, batched over tracks.

    State [n, 8]: (cx, cy, a, h, vcx, vcy, va, vh) with a = w / h; covariance [n, 8, 8]. One step is one frame.
    Noise is proportional to the box height (the DeepSORT / ByteTrack weights), except for the aspect ratio.
    """

    def __init__(self, std_weight_position: float = 1.0 / 20, std_weight_velocity: float = 1.0 / 160) -> None:
        self.wp = std_weight_position
        self.wv = std_weight_velocity
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)

    def _std(self, h: np.ndarray, pos: float, vel: float, a_pos: float, a_vel: float) -> np.ndarray:
        """Per-track standard deviations [n, 8] scaled by height h [n]."""
        p, v = pos * self.wp * h, vel * self.wv * h
        return np.stack([p, p, np.full_like(h, a_pos), p, v, v, np.full_like(h, a_vel), v], axis=1)

    @staticmethod
    def _diag(std: np.ndarray) -> np.ndarray:
        out = np.zeros(std.shape + (std.shape[-1],))
        idx = np.arange(std.shape[-1])
        out[:, idx, idx] = std ** 2
        return out

    def initiate(self, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks at measurements xyah [n, 4], at rest -> mean [n, 8], covariance [n, 8, 8]."""
        mean = np.concatenate([xyah, np.zeros_like(xyah)], axis=1)
        return mean, self._diag(self._std(xyah[:, 3], 2.0, 10.0, 1e-2, 1e-5))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame ahead: mean [n, 8], cov [n, 8, 8] -> same shapes."""
        noise = self._diag(self._std(mean[:, 3], 1.0, 1.0, 1e-2, 1e-5))
        return mean @ self.motion.T, self.motion @ cov @ self.motion.T + noise

    def update(self, mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct mean [n, 8], cov [n, 8, 8] with measurements xyah [n, 4] -> same shapes."""
        h = mean[:, 3]
        r = np.stack([self.wp * h, self.wp * h, np.full_like(h, 1e-1), self.wp * h], axis=1)
        s = cov[:, :4, :4] + self._diag(r)  # innovation covariance [n, 4, 4]
        gain = np.linalg.solve(s, cov[:, :4, :]).transpose(0, 2, 1)  # P H^T S^-1 (P, S symmetric) [n, 8, 4]
        innovation = xyah - mean[:, :4]
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
        return new_mean, new_cov


class ByteTracker:
    """ByteTrack over one video: call once per frame, in order.

    Returns the confirmed tracks seen in the frame as the matched detector boxes and scores (not the Kalman
    estimate), with ``track_id`` set and sorted by it. Ids start at 1 per tracker and are never reused.
    """

    def __init__(self, config: TrackConfig, fps: float) -> None:
        if not (isinstance(fps, (int, float, np.floating, np.integer)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive finite number, got {fps!r}")
        self.config = config
        self.fps = float(fps)
        # Lost tracks are kept this many frames: track_buffer is meant at 30 fps.
        self.buffer = int(self.fps / 30.0 * config.track_buffer)
        self.kf = KalmanBoxFilter()
        self.frame = 0  # 1-based index of the last frame seen
        self.next_id = 1
        # One row per live track, rows in id order.
        self.ids = np.zeros(0, np.int64)
        self.mean = np.zeros((0, 8))
        self.cov = np.zeros((0, 8, 8))
        self.state = np.zeros(0, np.int8)
        self.confirmed = np.zeros(0, bool)
        self.start = np.zeros(0, np.int64)  # frame the track was born in
        self.last = np.zeros(0, np.int64)  # frame the track last matched a detection
        log.debug("ByteTracker: fps %.3f, lost tracks kept %d frames", self.fps, self.buffer)

    def _cost(self, tracks: np.ndarray, boxes: np.ndarray, scores: np.ndarray, fuse: bool) -> np.ndarray:
        """1 - IoU (times the detection score when fuse) between track rows [n] and boxes [m, 4] -> [n, m]."""
        sim = iou_matrix(xyah_to_xyxy(self.mean[tracks]), boxes)
        return 1.0 - (sim * scores[None, :] if fuse else sim)

    def _keep(self, keep: np.ndarray) -> None:
        for name in ("ids", "mean", "cov", "state", "confirmed", "start", "last"):
            setattr(self, name, getattr(self, name)[keep])

    def __call__(self, dets: Detections) -> Detections:
        """Track one frame's detections (the next frame of the video) -> confirmed tracks seen in it."""
        self.frame += 1
        boxes = dets.xyxy.astype(np.float64)
        scores = dets.confidence.astype(np.float64)
        high, low = self._by_confidence(boxes, scores)
        was_lost = self.state == LOST
        det_of, newly_lost, drop, high_left = self._associate(boxes, scores, high, low)
        self._apply_matches(boxes, det_of, newly_lost)
        # A lost track goes once it has missed more than buffer + 1 frames. ByteTrack flags it after buffer
        # frames but only discards it at the end of the next frame, after it took part in that frame's first
        # association; we keep that effective window.
        drop |= was_lost & (self.frame - self.last > self.buffer + 1)
        det_of, drop = self._start_tracks(boxes, scores, high_left, det_of, drop)

        drop |= self._duplicates(drop)
        self._keep(~drop)
        det_of = det_of[~drop]

        show = np.flatnonzero((self.state == TRACKED) & self.confirmed)
        rows = det_of[show]
        return Detections(dets.xyxy[rows].reshape(-1, 4), dets.confidence[rows], self.ids[show])

    def _by_confidence(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the confident and of the weak detections (the rest are below the low threshold)."""
        cfg = self.config
        # Boxes without area or with non-finite numbers cannot be tracked (the aspect ratio divides by height).
        usable = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & (boxes[:, 2] > boxes[:, 0]) \
            & (boxes[:, 3] > boxes[:, 1])
        high = np.flatnonzero(usable & (scores >= cfg.high_threshold))
        low = np.flatnonzero(usable & (scores >= cfg.low_threshold) & (scores < cfg.high_threshold))
        return high, low

    def _associate(self, boxes: np.ndarray, scores: np.ndarray, high: np.ndarray,
                   low: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """ByteTrack's three associations over the live tracks (their Kalman prediction first) ->
        (detection row each track matched or -1 [n], rows of the tracks lost this frame, rows to drop [n] (newborn
        tracks left unmatched), the confident detections still unmatched)."""
        cfg = self.config
        n = len(self.ids)
        det_of = np.full(n, -1, np.int64)  # detection row each track matched this frame
        tracked = self.state == TRACKED
        was_lost = self.state == LOST
        unconfirmed = np.flatnonzero(tracked & ~self.confirmed)
        pool = np.concatenate([np.flatnonzero(tracked & self.confirmed), np.flatnonzero(was_lost)])

        # Predict confirmed and lost tracks (a lost track keeps moving but stops growing or shrinking).
        # Last frame's newborn tracks are matched where they were born.
        if len(pool):
            mean = self.mean[pool]
            mean[was_lost[pool], 7] = 0.0
            self.mean[pool], self.cov[pool] = self.kf.predict(mean, self.cov[pool])

        # First association: confident detections against confirmed and lost tracks.
        r, c = assign(self._cost(pool, boxes[high], scores[high], cfg.fuse_score), cfg.match_threshold)
        det_of[pool[r]] = high[c]
        rest = pool[unmatched(len(pool), r)]
        high_left = high[unmatched(len(high), c)]

        # Second association: weak detections against tracks that were tracked until now (not lost ones).
        rest = rest[tracked[rest]]
        r, c = assign(self._cost(rest, boxes[low], scores[low], False), cfg.second_match_threshold)
        det_of[rest[r]] = low[c]
        newly_lost = rest[unmatched(len(rest), r)]

        # Newborn tracks need a confident leftover detection now, or they are dropped.
        r, c = assign(self._cost(unconfirmed, boxes[high_left], scores[high_left], cfg.fuse_score),
                      cfg.unconfirmed_match_threshold)
        det_of[unconfirmed[r]] = high_left[c]
        drop = np.zeros(n, bool)
        drop[unconfirmed[unmatched(len(unconfirmed), r)]] = True
        high_left = high_left[unmatched(len(high_left), c)]
        return det_of, newly_lost, drop, high_left

    def _apply_matches(self, boxes: np.ndarray, det_of: np.ndarray, newly_lost: np.ndarray) -> None:
        """Kalman-correct the matched tracks with their detections and mark them tracked; mark the others lost."""
        hit = np.flatnonzero(det_of >= 0)
        if len(hit):
            self.mean[hit], self.cov[hit] = self.kf.update(self.mean[hit], self.cov[hit],
                                                           xyxy_to_xyah(boxes[det_of[hit]]))
        self.state[hit] = TRACKED
        self.confirmed[hit] = True
        self.last[hit] = self.frame
        self.state[newly_lost] = LOST

    def _start_tracks(self, boxes: np.ndarray, scores: np.ndarray, high_left: np.ndarray, det_of: np.ndarray,
                      drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks from confident leftovers; only those of the first frame count as confirmed at once.
        ``det_of`` and ``drop`` come back extended by the new rows."""
        born = high_left[scores[high_left] >= self.config.new_track_threshold]
        if not len(born):
            return det_of, drop
        f = self.frame
        mean, cov = self.kf.initiate(xyxy_to_xyah(boxes[born]))
        k = len(born)
        self.ids = np.concatenate([self.ids, np.arange(self.next_id, self.next_id + k, dtype=np.int64)])
        self.next_id += k
        self.mean = np.concatenate([self.mean, mean])
        self.cov = np.concatenate([self.cov, cov])
        self.state = np.concatenate([self.state, np.full(k, TRACKED, np.int8)])
        self.confirmed = np.concatenate([self.confirmed, np.full(k, f == 1)])
        self.start = np.concatenate([self.start, np.full(k, f, np.int64)])
        self.last = np.concatenate([self.last, np.full(k, f, np.int64)])
        return np.concatenate([det_of, born]), np.concatenate([drop, np.zeros(k, bool)])

    def _duplicates(self, drop: np.ndarray) -> np.ndarray:
        """Rows to drop because a tracked and a lost track cover the same box: the younger one goes
        (the tracked one on a tie). Age is frames from birth to the last match."""
        a = np.flatnonzero((self.state == TRACKED) & ~drop)
        b = np.flatnonzero((self.state == LOST) & ~drop)
        out = np.zeros(len(self.ids), bool)
        if not len(a) or not len(b):
            return out
        close = 1.0 - iou_matrix(xyah_to_xyxy(self.mean[a]), xyah_to_xyxy(self.mean[b])) < DUPLICATE_IOU_DISTANCE
        age = self.last - self.start
        a_older = age[a][:, None] > age[b][None, :]
        out[a[(close & ~a_older).any(axis=1)]] = True
        out[b[(close & a_older).any(axis=0)]] = True
        return out
