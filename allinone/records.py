"""Typed hand-offs between the stages.

Every record checks its shapes on construction, so a stage that produces something malformed fails where the
mistake is made, not three stages later. Coordinates are named by format: ``xyxy`` is (x1, y1, x2, y2) in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class VideoInfo:
    """What we know about an input video after opening it."""

    path: Path | str  # a file, or a stream's address as given
    name: str  # unique within a run (the file stem, suffixed if two inputs share it)
    role: str  # "gallery" | "probe"
    frames: int  # decoded frame count (counted, not trusted from the container)
    fps: float
    width: int  # after rotation
    height: int
    rotation: int = 0  # degrees clockwise the frames are turned (besides the container's own rotation tag)
    rotation_basis: str = "none"  # user | metadata | auto | upright | none

    def __post_init__(self) -> None:
        _check(self.role in ("gallery", "probe"), f"role must be gallery or probe, got {self.role!r}")
        _check(self.frames >= 0 and self.width > 0 and self.height > 0, "video size must be positive")


@dataclass(frozen=True)
class Detections:
    """Person boxes in one frame.

    xyxy: (N, 4) float32 pixels; confidence: (N,) float32; track_id: (N,) int64, set by the tracker.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
                           if np.asarray(self.xyxy).size == 0 else np.asarray(self.xyxy, dtype=np.float32))
        object.__setattr__(self, "confidence", np.asarray(self.confidence, dtype=np.float32).reshape(-1))
        _check(self.xyxy.ndim == 2 and self.xyxy.shape[1] == 4, f"xyxy must be (N, 4), got {self.xyxy.shape}")
        n = len(self.xyxy)
        _check(self.confidence.shape == (n,), f"confidence must be ({n},), got {self.confidence.shape}")
        if self.track_id is not None:
            tid = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            _check(tid.shape == (n,), f"track_id must be ({n},), got {tid.shape}")
            object.__setattr__(self, "track_id", tid)

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass
class Track:
    """One tracked person across a video: a box per frame it was seen in (frames are 0-based indices)."""

    track_id: int
    frames: list[int] = field(default_factory=list)
    xyxy: list[np.ndarray] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)

    def add(self, frame: int, xyxy: np.ndarray, confidence: float) -> None:
        _check(not self.frames or frame > self.frames[-1], "track frames must increase")
        self.frames.append(int(frame))
        self.xyxy.append(np.asarray(xyxy, np.float32).reshape(4))
        self.confidence.append(float(confidence))

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def first_frame(self) -> int:
        return self.frames[0]

    @property
    def last_frame(self) -> int:
        return self.frames[-1]


DROP_REASONS = ("border", "occluded", "low_score", "empty_mask", "over_limit")


@dataclass(frozen=True)
class Silhouettes:
    """A track's silhouettes after OpenGait's alignment, in time order, and what the quality filter left out.

    aligned: (T, 64, 64) uint8 0..255; frames: (T,) the 0-based frame index each one came from. dropped: frames of
    the track not used, by reason (DROP_REASONS): box at the frame border, covered by a person in front, a low-score
    box kept only by the tracker's second association, a mask that OpenGait's alignment rejects, or frames after the
    first max_frames silhouettes (OpenGait's frames_all_limit: they would not be used). (The raw masks are written as
    PNG while the video streams and are not kept in memory.)
    """

    track_id: int
    aligned: np.ndarray
    frames: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.aligned.ndim == 3 and self.aligned.shape[1:] == (64, 64) and self.aligned.dtype == np.uint8,
               f"aligned must be uint8 (T, 64, 64), got {self.aligned.dtype} {self.aligned.shape}")
        _check(np.asarray(self.frames).shape == (len(self.aligned),), "one frame index per silhouette")
        _check(set(self.dropped) <= set(DROP_REASONS), f"drop reasons must be among {DROP_REASONS}")

    def __len__(self) -> int:
        return len(self.aligned)


N_KEYPOINTS = 17  # COCO-17: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles (left before right)


@dataclass(frozen=True)
class Keypoints:
    """A track's 2-D COCO-17 keypoints in time order: frames (T,) int64, the 0-based frame of each pose; xy
    (T, 17, 2) float32 in frame pixels (x right, y down); confidence (T, 17) float32 in [0, 1]. dropped: frames of
    the track not used, by reason (DROP_REASONS), as for silhouettes."""

    track_id: int
    frames: np.ndarray
    xy: np.ndarray
    confidence: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", np.asarray(self.frames, np.int64).reshape(-1))
        object.__setattr__(self, "xy", np.asarray(self.xy, np.float32))
        object.__setattr__(self, "confidence", np.asarray(self.confidence, np.float32))
        t = len(self.frames)
        _check(self.xy.shape == (t, N_KEYPOINTS, 2), f"xy must be ({t}, {N_KEYPOINTS}, 2), got {self.xy.shape}")
        _check(self.confidence.shape == (t, N_KEYPOINTS),
               f"confidence must be ({t}, {N_KEYPOINTS}), got {self.confidence.shape}")
        _check(t < 2 or bool(np.all(np.diff(self.frames) > 0)), "keypoint frames must increase")
        _check(set(self.dropped) <= set(DROP_REASONS), f"drop reasons must be among {DROP_REASONS}")

    def __len__(self) -> int:
        return len(self.frames)

    def stacked(self) -> np.ndarray:
        """(T, 17, 3) float32 (x, y, confidence): the layout of OpenGait's pose pickles and GaitGraph's input."""
        return np.concatenate([self.xy, self.confidence[..., None]], axis=-1)


@dataclass(frozen=True)
class Embedding:
    """A track's gait embedding: feature (C, P) float32, e.g. GaitBase's (256, 16).

    first_frame / last_frame: the 0-based frame range of the track (two tracks of one video whose ranges overlap
    are two different people).
    """

    video: str
    track_id: int
    feature: np.ndarray
    n_frames: int  # silhouettes that went into it
    first_frame: int = 0
    last_frame: int = 0

    def __post_init__(self) -> None:
        _check(self.feature.ndim == 2 and self.feature.dtype == np.float32,
               f"feature must be float32 (C, P), got {self.feature.dtype} {self.feature.shape}")
        _check(0 <= self.first_frame <= self.last_frame, f"bad frame range {self.first_frame}..{self.last_frame}")


@dataclass(frozen=True)
class Identity:
    """A known person of the gallery: a unique name and one or more gallery tracks (their embeddings).

    key: a small integer that picks the identity's drawing color (its first track id, so a default identity has
    the color its track has in the gallery's tracked video).
    """

    name: str
    members: tuple[Embedding, ...]
    key: int = 0

    def __post_init__(self) -> None:
        _check(bool(self.name) and self.name == self.name.strip(), f"identity name must be non-empty, got {self.name!r}")
        _check(len(self.members) > 0, f"identity {self.name!r} has no tracks")
        shapes = {m.feature.shape for m in self.members}
        _check(len(shapes) == 1, f"identity {self.name!r}: features of different shapes {sorted(shapes)}")


STATUSES = ("match", "unknown", "too_short")
# Why a probe track is not a match: no gallery identity to compare with; none within the threshold; every identity
# within the threshold went to a probe track seen at the same time; too few usable silhouettes to embed; no
# impostor evidence to set a threshold by (and none given), so nothing is matched.
REASONS = ("no_gallery", "no_candidate", "taken", "too_few_silhouettes", "no_threshold_evidence")


@dataclass(frozen=True)
class Decision:
    """Who a probe track is: a gallery identity, unknown (with the reason), or too short to tell.

    distance: to ``identity`` when matched, else to the nearest identity (None when nothing was compared).
    ranking: the nearest usable gallery identities (MatchConfig.ranking_kept) as (name, distance), nearest first.
    matched: the identity's track (video, track id) at that distance, for a match: the one a report shows.
    """

    probe_video: str
    probe_track: int
    status: str
    identity: str | None
    distance: float | None
    reason: str | None
    ranking: list[tuple[str, float]]
    matched: tuple[str, int] | None = None

    @classmethod
    def too_short(cls, video: str, track: int) -> "Decision":
        """A track with too few usable silhouettes (or poses) to compare."""
        return cls(video, track, "too_short", None, None, "too_few_silhouettes", [])

    def __post_init__(self) -> None:
        _check(self.status in STATUSES, f"bad status {self.status!r}")
        _check((self.identity is None) == (self.status != "match"), "identity is set exactly when status is match")
        _check((self.reason is None) == (self.status == "match"), "a reason is given exactly when not matched")
        _check(self.reason is None or self.reason in REASONS, f"bad reason {self.reason!r}")
        _check(self.matched is None or self.status == "match", "a matched track is given only for a match")


@dataclass
class TrackResult:
    """What a run keeps of one track once it has ended: its frame span, silhouette counts, embedding and two small
    pictures (the aligned-silhouette average, GEI, and a crop of the person), never its frames or silhouettes.

    Frames are 0-based. gei: uint8 [64, 64] or None; crop: uint8 [h, w, 3] BGR or None.
    """

    track_id: int
    first_frame: int
    last_frame: int
    n_frames: int
    n_silhouettes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    embedding: Embedding | None = None
    keypoints: Keypoints | None = None  # the track's poses (with a pose stage), for drawing and the pose pickle
    gei: np.ndarray | None = None
    crop: np.ndarray | None = None
    files: dict[str, str] = field(default_factory=dict)  # run-relative paths written for it

    def __post_init__(self) -> None:
        _check(0 <= self.first_frame <= self.last_frame, f"bad frame span {self.first_frame}..{self.last_frame}")
        _check(self.gei is None or (self.gei.shape == (64, 64) and self.gei.dtype == np.uint8),
               "gei must be uint8 (64, 64)")
        _check(self.crop is None or (self.crop.ndim == 3 and self.crop.dtype == np.uint8), "crop must be uint8 HxWx3")


@dataclass(frozen=True)
class DecisionEvent:
    """One decision as every output sees it (run.json matches, live events files, MQTT, webhooks): the one record
    they are all built from, turned into a dict in one place (``to_json``).

    stream: the probe video's or live stream's name in the run; track: its track id there. first_frame /
    last_frame: the track's span at the decision, 1-based (None where unknown). silhouettes: how many went into the
    embedding that decided it (None when it had none). final: the track has ended and this decision is its last.
    wall_time: when the decision was made, ISO 8601 in UTC with milliseconds (a string, so a reader needs no epoch
    convention). lr / lr_verbal: the likelihood ratio and its verbal equivalent, only where an LR model is given
    (None otherwise).
    """

    stream: str
    track: int
    status: str
    identity: str | None
    distance: float | None
    reason: str | None
    first_frame: int | None
    last_frame: int | None
    silhouettes: int | None
    final: bool
    wall_time: str
    lr: float | None = None
    lr_verbal: str | None = None

    def __post_init__(self) -> None:
        _check(bool(self.stream), "an event names its stream")
        _check(self.status in STATUSES, f"bad status {self.status!r}")
        _check((self.identity is None) == (self.status != "match"), "identity is set exactly when status is match")
        _check((self.reason is None) == (self.status == "match"), "a reason is given exactly when not matched")
        _check(self.reason is None or self.reason in REASONS, f"bad reason {self.reason!r}")
        _check(self.distance is None or bool(np.isfinite(self.distance)), f"distance must be finite, got {self.distance!r}")
        _check((self.first_frame is None) == (self.last_frame is None), "a frame span has both ends or none")
        _check(self.first_frame is None or 1 <= self.first_frame <= self.last_frame,
               f"bad frame span {self.first_frame}..{self.last_frame} (1-based)")
        _check(self.silhouettes is None or self.silhouettes >= 0, "silhouettes must be >= 0")
        _check(isinstance(self.final, bool), "final must be a bool")
        _check(self.lr is None or (np.isfinite(self.lr) and self.lr > 0), f"lr must be finite and > 0, got {self.lr!r}")
        _check((self.lr is None) == (self.lr_verbal is None), "an LR comes with its verbal equivalent")
        try:
            datetime.fromisoformat(self.wall_time)
        except (TypeError, ValueError):
            raise ValueError(f"wall_time must be ISO 8601, got {self.wall_time!r}") from None

    @classmethod
    def of(cls, d: Decision, span: tuple[int, int] | None, silhouettes: int | None, final: bool,
           wall_time: str | None = None) -> "DecisionEvent":
        """The event of ``d`` (span 1-based), stamped now unless ``wall_time`` is given."""
        first, last = span if span is not None else (None, None)
        return cls(d.probe_video, int(d.probe_track), d.status, d.identity,
                   None if d.distance is None else float(d.distance), d.reason, first, last, silhouettes, final,
                   wall_time or now_iso())

    def to_json(self) -> dict:
        """The event as JSON-ready values: the one place it becomes a dict. The LR keys are there only when the
        event carries an LR: a 1:N search result has none (an LR belongs to one designated comparison), and a key
        of null would read as if one could have been given."""
        out = {"stream": self.stream, "track": self.track, "status": self.status, "identity": self.identity,
               "distance": None if self.distance is None else round(self.distance, 6), "reason": self.reason,
               "first_frame": self.first_frame, "last_frame": self.last_frame, "silhouettes": self.silhouettes,
               "final": self.final, "wall_time": self.wall_time}
        if self.lr is not None:
            out.update(lr=float(f"{self.lr:.6g}"), lr_verbal=self.lr_verbal)
        return out


def now_iso() -> str:
    """Now in UTC, ISO 8601 with milliseconds: the wall time of events."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
