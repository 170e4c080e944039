"""What a live camera's producer (decode, detect, track, silhouettes, embeddings: stages/stream_pass.py
CameraProducer) hands its consumer (decisions, events, drawing, segments, track files, sightings: LiveCamera) for each
frame. In one process the hand-off is passed as is; with ``watch --engine ray`` it is pickled from a node's actor to
the head, its frame JPEG-encoded (a raw 1080p frame is 6 MB, its JPEG ~0.2 MB)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from allinone.records import Detections, Embedding, Keypoints, Silhouettes

JPEG_QUALITY = 90  # the result video and the sightings' clips are drawn on it: no visible loss at 90


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class EndedTrack:
    """A track the tracker let go: its span (first frame, last frame, frames seen), what the cutter kept of it
    (silhouettes, or keypoints for a keypoint gait model), its crop, and the feature it is saved with (its last
    decision's embedding, else one forward over the whole track; None where the model had nothing to read)."""

    track_id: int
    span: tuple[int, int, int]
    cut: Silhouettes | Keypoints
    crop: np.ndarray | None
    feature: np.ndarray | None

    def __post_init__(self) -> None:
        _check(len(self.span) == 3 and self.span[0] <= self.span[1], f"span must be (first, last, n), got {self.span}")
        _check(self.cut.track_id == self.track_id, f"track {self.track_id} handed track {self.cut.track_id}'s cut")
        _check(self.crop is None or (self.crop.ndim == 3 and self.crop.dtype == np.uint8), "crop must be HxWx3 uint8")
        _check(self.feature is None or self.feature.dtype == np.float32, "feature must be float32")


@dataclass(frozen=True)
class CameraStep:
    """One frame's hand-off. ``wall``: when it arrived (unix seconds; the consumer's latency clock, also across
    machines). ``spans``: every open track's (first, last, n) at this frame, the ended ones included. ``new``: the
    embeddings made at this frame. ``frame`` (in process) or ``jpeg`` (shipped): the frame as read, to draw on.
    ``poses``: this frame's keypoints by track (a keypoint gait model draws them)."""

    index: int
    wall: float
    tracked: Detections
    spans: dict[int, tuple[int, int, int]]
    new: tuple[Embedding, ...] = ()
    ended: tuple[EndedTrack, ...] = ()
    frame: np.ndarray | None = None
    jpeg: bytes | None = None
    poses: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.index >= 0, f"frame index must be ≥ 0, got {self.index}")
        _check(self.tracked.track_id is not None, "tracked boxes without track ids")
        _check((self.frame is None) != (self.jpeg is None), "exactly one of frame and jpeg")
        if self.frame is not None:
            _check(self.frame.ndim == 3 and self.frame.shape[2] == 3 and self.frame.dtype == np.uint8,
                   f"frame must be HxWx3 uint8, got {self.frame.shape} {self.frame.dtype}")
        tids = set(self.tracked.track_id.tolist())
        _check(tids <= set(self.spans), f"tracks {sorted(tids - set(self.spans))} have no span")
        _check(all(e.track_id in self.spans for e in self.new), "an embedding of a track with no span")
        _check(all(e.track_id in self.spans for e in self.ended), "an ended track with no span")

    def image(self) -> np.ndarray:
        """The frame (decoded from its JPEG when shipped)."""
        if self.frame is not None:
            return self.frame
        import cv2
        img = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"frame {self.index}: its JPEG does not decode")
        return img

    def shipped(self) -> "CameraStep":
        """The same hand-off with its frame JPEG-encoded (to send to another machine)."""
        if self.frame is None:
            return self
        import cv2
        ok, data = cv2.imencode(".jpg", self.frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError(f"frame {self.index}: cannot be JPEG-encoded")
        return CameraStep(self.index, self.wall, self.tracked, self.spans, self.new, self.ended, None,
                          data.tobytes(), self.poses)


@dataclass(frozen=True)
class CameraEnd:
    """The producer's end: every track still open, ended (the run's end closes them all), and its timings (detect,
    track, segment, embed, ...) for the camera's stats."""

    ended: tuple[EndedTrack, ...]
    timings: dict[str, float]


__all__ = ["CameraEnd", "CameraStep", "EndedTrack", "JPEG_QUALITY"]
