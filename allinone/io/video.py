"""Video in and out: open and check inputs, stream frames (decoded in a background thread), write videos atomically.

Over 400 lines because files, live streams and the H.264 sink share one decoding/encoding thread pattern and one
set of open checks; a split would put the two halves of that pattern in different files."""
from __future__ import annotations

import logging
import os
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

from allinone.errors import ENVIRONMENT_ERRNO, UserError
from allinone.io.run_folder import temp_beside

log = logging.getLogger(__name__)

_END = object()


def _consume(q: queue.Queue):
    """Items a reader thread puts on ``q`` until its end marker; an exception it put is raised here."""
    while True:
        item = q.get()
        if item is _END:
            return
        if isinstance(item, Exception):
            raise item
        yield item


def _drain_and_join(q: queue.Queue, thread: threading.Thread) -> None:
    """Wait for a reader thread to end, unblocking it while it waits on a full queue."""
    while thread.is_alive():
        try:
            q.get_nowait()
        except queue.Empty:
            pass
        thread.join(timeout=0.05)


ROTATIONS = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def rotate(frame: np.ndarray, degrees: int) -> np.ndarray:
    """The frame turned clockwise by 0, 90, 180 or 270 degrees."""
    code = ROTATIONS[degrees]
    return frame if code is None else cv2.rotate(frame, code)


class _Turned:
    """A source whose frames are turned clockwise by ``rotation`` degrees after decoding: ``_hw`` is the size as
    decoded, ``height``/``width`` the size as turned."""

    def set_rotation(self, degrees: int) -> None:
        if degrees not in ROTATIONS:
            raise ValueError(f"rotation must be one of {sorted(ROTATIONS)}, got {degrees}")
        self.rotation = degrees
        h, w = self._hw
        self.height, self.width = (w, h) if degrees in (90, 270) else (h, w)


class VideoSource(_Turned):
    """An input video, opened once to check it; ``frames()`` then streams it, turned by ``rotation`` degrees
    clockwise (after the container's own rotation tag, which OpenCV applies; ``rotation_meta`` records that tag).

    The container's frame count is only a hint (it is often wrong); ``count`` is what was really decoded. When
    decoding stops well before the frames the container announces, or the decoder fails, the frames so far are kept
    and ``decode_warning`` (also logged) names the file and the frame where decoding stopped.
    """

    def __init__(self, path: str | Path, rotation: int = 0) -> None:
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
            self._hw = frame.shape[:2]
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.frame_count_hint = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.rotation_meta = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
        finally:
            cap.release()
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            log.warning("%s: no usable frame rate in the file, assuming 30 fps", self.path)
            fps = 30.0
        self.fps = fps
        self.count = 0
        self.decode_warning: str | None = None
        self.set_rotation(rotation)

    def sample(self, n: int) -> list[np.ndarray]:
        """Up to ``n`` frames spread over the video (unturned), for choosing a rotation."""
        cap = cv2.VideoCapture(str(self.path))
        out = []
        try:
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            for k in range(n):
                if total > 0:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, int((k + 0.5) * total / n))
                ok, frame = cap.read()
                if ok and frame is not None:
                    out.append(frame)
        finally:
            cap.release()
        return out

    def frames(self, prefetch: int = 8) -> Iterator[np.ndarray]:
        """Yield BGR frames [H, W, 3] uint8 in order. Decoding runs in a thread (OpenCV releases the GIL while it
        decodes), ``prefetch`` frames ahead, so it overlaps with the models' work on the previous frames."""
        q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        stop = threading.Event()

        failure: list[str] = []

        def reader() -> None:
            cap = cv2.VideoCapture(str(self.path))
            try:
                while not stop.is_set():
                    ok, frame = cap.read()
                    if not ok:
                        break
                    q.put(rotate(frame, self.rotation))
            except cv2.error as exc:  # the decoder failed: the frames so far stand, with a warning
                failure.append(" ".join(str(exc).split())[:200])
            except Exception as exc:  # surfaced in the consumer thread below
                q.put(exc)
            finally:
                cap.release()
                q.put(_END)

        thread = threading.Thread(target=reader, name=f"decode-{self.path.name}", daemon=True)
        thread.start()
        self.count = 0
        try:
            for item in _consume(q):
                if item.shape[0] != self.height or item.shape[1] != self.width:
                    raise UserError(f"frame {self.count + 1} has size {item.shape[1]}x{item.shape[0]}, "
                                    f"the first had {self.width}x{self.height}", self.path)
                self.count += 1
                yield item
            self._check_end(failure[0] if failure else None)
        finally:
            stop.set()
            _drain_and_join(q, thread)

    def _check_end(self, failure: str | None) -> None:
        """After the last frame: a warning when the decoder failed or stopped short of the container's count."""
        hint = self.frame_count_hint
        if failure is None and not (hint > 0 and self.count < hint - max(1, hint // 100)):
            return
        why = f"the decoder failed ({failure})" if failure else \
            f"the container announces {hint} frames (the file is truncated or damaged)"
        self.decode_warning = f"decoding stopped after frame {self.count}: {why}"
        log.warning("%s: %s; the run uses the %d frames decoded", self.path, self.decode_warning, self.count)


class VideoSink:
    """Writes frames as H.264 (yuv420p, MP4 with the index at the front: ``+faststart``) through PyAV, so browsers
    and Colab's player play the result; to a temporary name, the file appearing under its own only on ``close()``.
    ``discard()`` (or leaving a ``with`` block by an exception) removes the partial file.

    Odd frame sizes are padded by one black row or column (yuv420p needs even ones). Encoding (colour conversion
    included) runs in a background thread, so drawing the next frame overlaps with encoding this one; ``write``
    blocks only when ``queue_size`` frames are waiting. One frame in is one frame out, at the given frame rate.

    ``encoder``: ``auto`` (default) NVENC where this FFmpeg has it and a GPU opens it, else libx264; or an encoder
    name. The colour conversion BGR → yuv420p (BT.601, limited range, as FFmpeg's own default) is OpenCV's: FFmpeg's
    swscale through PyAV measured 10.4 ms a 720p frame against OpenCV's 0.6 ms (README, "Speed").
    """

    CONTAINER_OPTIONS = {"movflags": "+faststart"}  # the MP4 muxer's (io/segments.py's fragmented sink: its own)
    # x264 speed/size trade-off, measured on demo4 at 720x1280 (README "Speed"): ultrafast at CRF 28 keeps the PSNR
    # of the first H.264 videos (35.3 dB) in 0.41 of their CPU time (0.68 of superfast CRF 26's), for files about 1.5
    # times superfast's; with it one person at 720p reached 0.81-0.84 of the models' own cost end to end, against
    # 0.67-0.69 with superfast in the run beside it.
    PRESET = "ultrafast"
    CRF = "28"  # x264 quality (lower is better and larger; 23 is x264's default)

    def __init__(self, path: str | Path, fps: float, size_wh: tuple[int, int], queue_size: int = 8,
                 encoder: str = "auto") -> None:
        import av
        from fractions import Fraction

        self.path = Path(path)
        self.tmp = temp_beside(self.path)
        self.size_wh = (int(size_wh[0]), int(size_wh[1]))
        self.count = 0
        self._even = (self.size_wh[0] + self.size_wh[0] % 2, self.size_wh[1] + self.size_wh[1] % 2)
        from allinone.io.encoders import h264_encoder
        self.encoder = h264_encoder(encoder)
        try:
            self._container = av.open(str(self.tmp), mode="w", format="mp4", options=dict(self.CONTAINER_OPTIONS))
            rate = Fraction(float(fps)).limit_denominator(1001)
            self._stream = self._container.add_stream(self.encoder, rate=rate)
            self._stream.width, self._stream.height = self._even
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = self._codec_options(float(fps))
            # the file and its header now, not at the first packet: a sink closed before any frame (a live run
            # stopped just as a segment opened) leaves a valid empty video, not a missing file
            self._container.start_encoding()
        except Exception as exc:  # PyAV raises its own error types (OSError subclasses, FFmpegError)
            self.tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNO:  # a full disk: the machine's fault
                raise
            raise UserError(f"cannot write a video here ({exc})", self.path) from None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode, name=f"encode-{self.path.name}", daemon=True)
        self._thread.start()

    def _codec_options(self, fps: float) -> dict[str, str]:
        return {"preset": self.PRESET, "crf": self.CRF} if self.encoder == "libx264" else \
            {"preset": "p4", "cq": "26"} if self.encoder == "h264_nvenc" else {}

    def _keyframe_due(self) -> bool:
        """Whether the next frame must be a keyframe (the encoder's own choice otherwise)."""
        return False

    def _encode(self) -> None:
        import av
        while True:
            frame = self._queue.get()
            if frame is _END:
                return
            if self._error is None:
                try:
                    if frame.shape[1::-1] != self._even:
                        frame = np.pad(frame, ((0, self._even[1] - frame.shape[0]),
                                               (0, self._even[0] - frame.shape[1]), (0, 0)))
                    yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)  # [h * 3 / 2, w]: Y, then U, then V
                    picture = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                    if self._keyframe_due():
                        picture.pict_type = av.video.frame.PictureType.I
                    for packet in self._stream.encode(picture):
                        self._container.mux(packet)
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
        try:
            if self._error is None:
                for packet in self._stream.encode(None):  # flush the encoder's delayed frames
                    self._container.mux(packet)
        except Exception as exc:
            self._error = exc
        finally:
            self._container.close()

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


LOOP = "loop:"  # loop:PATH, a video file watched as a live camera (LoopedFile)


def is_stream(spec: str | Path) -> bool:
    """rtsp://, http(s):// addresses, webcam:N and loop:PATH are live streams; anything else is a file path."""
    s = str(spec)
    return s.startswith(("rtsp://", "rtsps://", "http://", "https://", "webcam:", LOOP))


def open_stream(spec: str, reconnect_s: float = 30.0) -> "StreamSource":
    """The live source a spec names: a looped file for loop:PATH, else a stream or webcam."""
    return LoopedFile(spec, reconnect_s) if spec.startswith(LOOP) else StreamSource(spec, reconnect_s)


class StreamSource(_Turned):
    """A live stream (RTSP, HTTP such as MPEG-TS or MJPEG, or a local webcam ``webcam:N``), read through OpenCV's
    FFmpeg backend in a thread.

    ``frames()`` yields (frame, arrival time from time.monotonic()). The thread keeps at most ``queue_size`` frames:
    when the consumer falls behind, the oldest waiting frame is dropped (``dropped`` counts them), so decisions stay
    close to real time instead of lagging ever further. A stream that stops delivering is reopened with exponential
    backoff (0.5 s doubling up to 8 s) for up to ``reconnect_s`` seconds, each attempt logged; after that, or when
    ``stop()`` is called, the stream ends. Opening fails at once (UserError) if the first connection fails.
    """

    def __init__(self, spec: str, reconnect_s: float = 30.0, open_timeout_s: float = 10.0,
                 queue_size: int = 4) -> None:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        self.spec = str(spec)
        self.path = self.spec  # named like VideoSource's, for messages
        self.reconnect_s = reconnect_s
        self.open_timeout_s = open_timeout_s
        self.queue_size = queue_size
        self.dropped = 0
        self.reconnects = 0
        self.count = 0
        self.step, self.skipped = 1, 0  # every step-th frame is analysed; the others are skipped as read
        self.state = "live"  # "reconnecting" while it is down, "ended" once it has ended (a status page reads it)
        self._stop = threading.Event()
        cap = self._open()
        if cap is None:
            what = "webcam cannot be opened" if self.spec.startswith("webcam:") else "stream cannot be opened"
            raise UserError(f"{what} (nothing answered, or not a video stream)", self.spec)
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise UserError("stream opened but sent no frame", self.spec)
        self.height, self.width = frame.shape[:2]
        self._hw, self.rotation = (self.height, self.width), 0  # as sent; frames are turned after that
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.sent_fps = fps if np.isfinite(fps) and 1.0 <= fps <= 240.0 else 25.0
        self.fps = self.sent_fps  # as analysed: the stream's over the step
        self.frame_count_hint = 0
        self._cap, self._first = cap, frame

    def set_step(self, step: int) -> None:
        """Analyse every ``step``-th frame: the others are skipped as they are read (counted in ``skipped``, not
        ``dropped``), and downstream sees a stream of fps / step. Before ``feed``."""
        if type(step) is not int or step < 1:
            raise ValueError(f"step must be an integer ≥ 1, got {step!r}")
        self.step, self.fps = step, self.sent_fps / step

    def _pace(self) -> None:
        """Called after each frame read; a live stream is paced by its sender."""

    def _open(self):
        """A capture, or None. OpenCV's own warnings about a failed open are silenced: our error says it once."""
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            return self._open_capture()
        finally:
            cv2.utils.logging.setLogLevel(level)

    def _open_capture(self):
        if self.spec.startswith("webcam:"):
            try:
                index = int(self.spec.split(":", 1)[1])
            except ValueError:
                raise UserError("expected webcam:N with a device number N", self.spec) from None
            cap = cv2.VideoCapture(index)
        else:
            ms = int(self.open_timeout_s * 1000)
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def stop(self) -> None:
        self._stop.set()

    def _reader(self, q: queue.Queue) -> None:
        import time
        cap, frame = self._cap, self._first
        read = 1
        try:
            while not self._stop.is_set():
                if frame is None:
                    ok, frame = cap.read()
                    if not ok or frame is None:
                        cap.release()
                        cap = self._reconnect()
                        if cap is None:
                            break
                        frame = None
                        continue
                    self._pace()
                    read += 1
                    if (read - 1) % self.step:
                        self.skipped += 1
                        frame = None
                        continue
                if frame.shape[:2] != self._hw:  # a reconnected stream in another size: the first one's
                    frame = cv2.resize(frame, (self._hw[1], self._hw[0]))
                if self.rotation:
                    frame = rotate(frame, self.rotation)
                item = (frame, time.monotonic())
                frame = None
                while True:
                    try:
                        q.put_nowait(item)
                        break
                    except queue.Full:
                        try:
                            q.get_nowait()
                            self.dropped += 1
                        except queue.Empty:
                            pass
        except Exception as exc:  # surfaced in the consumer
            q.put(exc)
        finally:
            self.state = "ended"
            if cap is not None:
                cap.release()
            q.put(_END)

    def _reconnect(self):
        import time
        deadline = time.monotonic() + self.reconnect_s
        wait = 0.5
        self.state = "reconnecting"
        while not self._stop.is_set() and time.monotonic() < deadline:
            log.warning("%s: the stream stopped; reconnecting in %.1f s", self.spec, wait)
            if self._stop.wait(min(wait, max(0.0, deadline - time.monotonic()))):
                return None
            cap = self._open()
            if cap is not None:
                self.reconnects += 1
                self.state = "live"
                log.warning("%s: reconnected (%d so far)", self.spec, self.reconnects)
                return cap
            wait = min(wait * 2, 8.0)
        log.warning("%s: no stream for %.0f s, ending", self.spec, self.reconnect_s)
        return None

    def feed(self, wake: threading.Event | None = None) -> "StreamFeed":
        """Start reading: the frames as they arrive, taken without waiting (several cameras in one loop)."""
        return StreamFeed(self, wake)

    def frames(self, deadline: float | None = None):
        """Yield (BGR frame [H, W, 3] uint8, arrival time) until the stream ends, stop() is called, or
        time.monotonic() reaches ``deadline`` — also while the stream is down and being reconnected."""
        import time
        wake = threading.Event()
        feed = self.feed(wake)
        try:
            while not feed.ended and (deadline is None or time.monotonic() < deadline):
                wake.clear()
                item = feed.take()
                if item is None:
                    wake.wait(0.1)
                    continue
                yield item
        finally:
            feed.close()


class LoopedFile(StreamSource):
    """A video file watched as a live camera (``loop:PATH``): its frames read at the file's own frame rate and
    from its start again at its end, without end — a camera for trying the service, for demos and soak tests.
    ``loops`` counts the restarts. A reader that falls over a second behind (the machine was busy) goes on from
    now rather than hurrying to catch up, as a live camera would."""

    def __init__(self, spec: str, reconnect_s: float = 30.0, open_timeout_s: float = 10.0,
                 queue_size: int = 4) -> None:
        self.file = Path(spec[len(LOOP):]).expanduser()
        if not self.file.is_file():
            raise UserError("no such video file to loop", str(self.file))
        self.loops, self._due = 0, None
        super().__init__(spec, reconnect_s, open_timeout_s, queue_size)

    def _open_capture(self):
        cap = cv2.VideoCapture(str(self.file))
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _pace(self) -> None:
        import time
        now = time.monotonic()
        if self._due is None or now - self._due > 1.0:
            self._due = now
        else:
            self._stop.wait(max(0.0, self._due - now))
        self._due += 1.0 / self.sent_fps

    def _reconnect(self):
        """The file's end: from its start again (None where it cannot be opened any more)."""
        cap = self._open()
        if cap is None:
            log.warning("%s: cannot be opened again, ending", self.file)
            self.state = "ended"
        else:
            self.loops += 1
        return cap


class StreamFeed:
    """A started StreamSource: its reader thread fills a small queue (oldest dropped when full) and sets ``wake``
    at each frame; ``take`` returns the next (frame, arrival time) or None at once, and raises the reader's error.
    ``close`` stops the reader; it is not waited for beyond a second (it may be blocked in an open or a read for up
    to ``open_timeout_s``, and releases its capture when that call returns)."""

    def __init__(self, src: StreamSource, wake: threading.Event | None = None) -> None:
        self.src = src
        self.wake = wake or threading.Event()
        self.ended = False
        self._q: queue.Queue = _WakingQueue(self.wake, maxsize=max(1, src.queue_size))
        self._thread = threading.Thread(target=src._reader, args=(self._q,), name=f"stream-{src.spec}",
                                        daemon=True)
        self._thread.start()

    def take(self):
        if self.ended:
            return None
        try:
            item = self._q.get_nowait()
        except queue.Empty:
            return None
        if item is _END:
            self.ended = True
            return None
        if isinstance(item, Exception):
            self.ended = True
            raise item
        self.src.count += 1
        return item

    def close(self) -> None:
        import time
        self.src.stop()
        end = time.monotonic() + 1.0
        while self._thread.is_alive() and time.monotonic() < end:
            try:
                self._q.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


class _WakingQueue(queue.Queue):
    """A queue that sets an event at every put: one loop can wait on several cameras' queues at once."""

    def __init__(self, wake: threading.Event, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self._wake = wake

    def _put(self, item) -> None:
        super()._put(item)
        self._wake.set()


def stream_name(spec: str) -> str:
    """A file-name-safe name for a stream: webcam:0 → webcam0; rtsp://host:8554/cam/x → x (else the host)."""
    if spec.startswith("webcam:"):
        return "webcam" + re.sub(r"\W", "", spec.split(":", 1)[1])
    u = urlparse(spec)
    stem = (u.path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]) or (u.hostname or "stream")
    return re.sub(r"[^\w.-]", "_", stem) or "stream"
