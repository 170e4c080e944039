"""Video in and out: open and check inputs, stream frames (decoded in a background thread), write videos atomically."""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError

log = logging.getLogger(__name__)

_END = object()


class VideoSource:
    """An input video, opened once to check it; ``frames()`` then streams it.

    The container's frame count is only a hint (it is often wrong); ``count`` is what was really decoded.
    """

    def __init__(self, path: str | Path) -> None:
        # FFmpeg's own log lines ("moov atom not found") would duplicate our one-line error; read before the
        # first capture is opened.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        self.path = Path(path)
        if not self.path.exists():
            raise UserError("video not found", self.path)
        if not self.path.is_file():
            raise UserError("not a file", self.path)
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise UserError("cannot be opened as a video (unreadable or not a video format)", self.path)
            ok, frame = cap.read()
            if not ok or frame is None:
                raise UserError("video has no frames that can be decoded", self.path)
            self.height, self.width = frame.shape[:2]
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.frame_count_hint = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            log.warning("%s: no usable frame rate in the file, assuming 30 fps", self.path)
            fps = 30.0
        self.fps = fps
        self.count = 0

    def frames(self, prefetch: int = 8) -> Iterator[np.ndarray]:
        """Yield BGR frames [H, W, 3] uint8 in order. Decoding runs in a thread (OpenCV releases the GIL while it
        decodes), ``prefetch`` frames ahead, so it overlaps with the models' work on the previous frames."""
        q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        stop = threading.Event()

        def reader() -> None:
            cap = cv2.VideoCapture(str(self.path))
            try:
                while not stop.is_set():
                    ok, frame = cap.read()
                    if not ok:
                        break
                    q.put(frame)
            except Exception as exc:  # surfaced in the consumer thread below
                q.put(exc)
            finally:
                cap.release()
                q.put(_END)

        thread = threading.Thread(target=reader, name=f"decode-{self.path.name}", daemon=True)
        thread.start()
        self.count = 0
        try:
            while True:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, Exception):
                    raise item
                if item.shape[0] != self.height or item.shape[1] != self.width:
                    raise UserError(f"frame {self.count + 1} has size {item.shape[1]}x{item.shape[0]}, "
                                    f"the first had {self.width}x{self.height}", self.path)
                self.count += 1
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a reader waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                thread.join(timeout=0.05)


class VideoSink:
    """Writes frames to ``path`` through a temporary name; the file appears under its name only on ``close()``.
    ``discard()`` (or leaving a ``with`` block by an exception) removes the partial file.

    Encoding runs in a background thread (OpenCV releases the GIL while it encodes), so drawing the next frame
    overlaps with encoding this one; ``write`` blocks only when ``queue_size`` frames are waiting."""

    def __init__(self, path: str | Path, fps: float, size_wh: tuple[int, int], fourcc: str = "mp4v",
                 queue_size: int = 8) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.size_wh = (int(size_wh[0]), int(size_wh[1]))
        self.count = 0
        self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.size_wh)
        if not self._writer.isOpened():
            self._writer.release()
            self.tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write a video here (codec {fourcc})", self.path)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode, name=f"encode-{self.path.name}", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _END:
                return
            if self._error is None:
                try:
                    self._writer.write(frame)
                except Exception as exc:  # re-raised in the producer's thread by write()/close()
                    self._error = exc

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1] != self.size_wh[0] or frame.shape[0] != self.size_wh[1]:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, sink expects {self.size_wh}")
        if self._error is not None:
            raise self._error
        self._queue.put(frame)
        self.count += 1

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()
        self._writer.release()

    def close(self) -> Path:
        self._finish()
        if self._error is not None:
            self.tmp.unlink(missing_ok=True)
            raise self._error
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self._finish()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def read_frame_count(path: str | Path) -> int:
    """Decode a whole video and count its frames (for checks; the pipeline counts while it streams)."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n
