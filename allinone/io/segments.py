"""A live run's growing files, cut into segments (hourly by default) so none grows without bound and a failure or a
kill loses at most the segment being written — and not even that for the video.

Per segment i (3 digits): ``events-<i>.jsonl`` (decision events), ``tracks/<name>-<i>.txt`` (MOT rows) and
``<video stem>-<i>.mp4`` (the result video). The video is a fragmented MP4 (``movflags
frag_keyframe+empty_moov+default_base_moof``: the index is written up front and each keyframe starts a fragment;
a keyframe at least every ``LiveConfig.keyframe_s``), so the file being written plays up to its last complete
fragment even if the process is killed, losing about that interval; it is written
under a hidden partial name and renamed when its segment is complete, like every other VideoSink. Events and MOT
rows are flushed line by line as they are written.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import numpy as np

from allinone.config import LiveConfig
from allinone.io.run_folder import MotWriter, RunWriter
from allinone.io.video import VideoSink

log = logging.getLogger(__name__)


class FragmentedSink(VideoSink):
    """VideoSink writing fragmented MP4: playable while (and if killed while) it is written.

    The muxer holds the fragment being built until the next keyframe starts another, so the keyframe interval is
    what a kill loses: a keyframe is forced whenever ``keyframe_s`` seconds of wall time have passed since the last
    one (a stream that falls behind still gets one on that clock) and the encoder's GOP is capped at
    ``keyframe_s`` seconds of frames at the stream's rate. A kill loses the open fragment plus the frames waiting in
    the encoder's queue and delay: about ``keyframe_s`` seconds and a few frames."""

    # the index up front, a fragment per keyframe, and every packet handed to the file at once (not held in
    # FFmpeg's I/O buffer), so a kill loses at most the fragment being built
    CONTAINER_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}

    def __init__(self, path, fps: float, size_wh: tuple[int, int], keyframe_s: float = LiveConfig.keyframe_s,
                 **kw) -> None:
        if not keyframe_s > 0:
            raise ValueError(f"keyframe interval must be > 0 s, got {keyframe_s}")
        self.keyframe_s = float(keyframe_s)
        self._last_key: float | None = None
        super().__init__(path, fps, size_wh, **kw)

    def _codec_options(self, fps: float) -> dict[str, str]:
        gop = str(max(1, round(fps * self.keyframe_s)))
        extra = {"g": gop, "forced-idr": "1"} if self.encoder == "h264_nvenc" else {"g": gop}
        return {**super()._codec_options(fps), **extra}

    def _keyframe_due(self) -> bool:
        now = time.monotonic()
        if self._last_key is None or now - self._last_key >= self.keyframe_s:
            self._last_key = now
            return True
        return False


class _FlushedMot(MotWriter):
    def write(self, index: int, xyxy: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> None:
        super().write(index, xyxy, scores, ids)
        self.fh.flush()


class Segments:
    """The current segment's events file, MOT writer and video sink; ``roll`` starts the next one once
    ``segment_s`` seconds of wall time have passed. ``entries`` lists the segments written (for run.json)."""

    def __init__(self, writer: RunWriter, name: str, video_stem: str, fps: float, size_wh: tuple[int, int],
                 segment_s: float = LiveConfig.segment_s, clock=time.monotonic,
                 keyframe_s: float = LiveConfig.keyframe_s, events_stem: str = "events") -> None:
        """``events_stem``: the events files' names (``events-000.jsonl``; a camera's own name where several
        cameras share one folder)."""
        if not segment_s > 0:
            raise ValueError(f"segment length must be > 0 s, got {segment_s}")
        self.writer, self.name, self.stem, self.fps, self.size_wh = writer, name, video_stem, fps, size_wh
        self.segment_s, self.clock, self.keyframe_s = float(segment_s), clock, keyframe_s
        self.events_stem = events_stem
        self.entries: list[dict] = []
        self.events = self.mot = self.sink = None
        self._open(0)

    def _open(self, first_frame: int) -> None:
        i = len(self.entries)
        entry = {"index": i, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "first_frame": first_frame + 1, "last_frame": None, "frames": 0,
                 "events": f"{self.events_stem}-{i:03d}.jsonl", "tracks_file": f"tracks/{self.name}-{i:03d}.txt",
                 "result_video": f"{self.stem}-{i:03d}.mp4", "complete": False}
        self.entries.append(entry)
        self.events = open(self.writer.path(entry["events"]), "a", encoding="utf-8")
        self.mot = _FlushedMot(self.writer.path(entry["tracks_file"]))
        self.sink = FragmentedSink(self.writer.path(entry["result_video"]), self.fps, self.size_wh, self.keyframe_s)
        entry["partial_video"] = self.sink.tmp.name  # where a later run's recovery finds the open segment's video
        self.t0 = self.clock()
        self.writer.journal()  # the segments so far, for a later run to recover the folder if this one is killed

    def _close_current(self) -> None:
        """Close the current segment's files; the video renamed into place (its fragments stay playable if
        closing it fails)."""
        entry = self.entries[-1]
        errors = []
        for close in (self.events.close, self.mot.close, self.sink.close):
            try:
                close()
            except Exception as exc:  # keep closing the others: each file holds what was written so far
                errors.append(exc)
        if errors:
            raise errors[0]
        entry.pop("partial_video", None)
        entry["complete"] = True

    def roll(self, frame_index: int) -> bool:
        """Before writing frame ``frame_index``: start a new segment when this one is old enough."""
        if self.clock() - self.t0 < self.segment_s or self.entries[-1]["frames"] == 0:
            return False
        self._close_current()
        log.info("segment %d written (%d frames); starting segment %d", self.entries[-1]["index"],
                 self.entries[-1]["frames"], len(self.entries))
        self._open(frame_index)
        return True

    # -- writing ------------------------------------------------------------------------------------------------
    def write_mot(self, index: int, xyxy: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> None:
        self.mot.write(index, xyxy, scores, ids)

    def write_event(self, line: str) -> None:
        self.events.write(line + "\n")
        self.events.flush()

    def write_frame(self, index: int, frame: np.ndarray) -> None:
        self.sink.write(frame)
        entry = self.entries[-1]
        entry["frames"] += 1
        entry["last_frame"] = index + 1

    def close(self) -> list[dict]:
        self._close_current()
        return self.entries

    def abandon(self) -> list[dict]:
        """After a failure: close what can be closed, delete nothing (the video's fragments play as they are)."""
        try:
            self._close_current()
        except Exception as exc:
            log.warning("segment %d could not be closed cleanly (%s); its files are kept as written",
                        self.entries[-1]["index"], exc)
        return self.entries

    def files(self, key: str) -> list[str]:
        return [e[key] for e in self.entries]


class MotProxy:
    """What FrameStep writes MOT rows to: the current segment's file."""

    def __init__(self, segments: Segments) -> None:
        self.segments = segments

    def write(self, index: int, xyxy, scores, ids) -> None:
        self.segments.write_mot(index, xyxy, scores, ids)


__all__ = ["FragmentedSink", "MotProxy", "Segments"]
