"""Each sighting's clip: the camera's last frames as drawn (boxes and decisions), kept small and compressed in a
ring per camera, and written as an H.264 MP4 when a track ends, so the review page plays a sighting at once
(the session's segment videos hold every frame, but are closed only hourly)."""
from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from allinone.io.video import VideoSink

CLIP_WIDTH = 320  # pixels: enough to see who walks where, at a few ms and ~20 KB a frame
CLIP_FRAMES = 300  # frames kept per camera: 12 s at 25 analysed frames a second, more when frames drop
JPEG_QUALITY = 70


class ClipRing:
    """The last CLIP_FRAMES frames of each camera, downscaled and JPEG-compressed, by frame index."""

    def __init__(self, frames: int = CLIP_FRAMES, width: int = CLIP_WIDTH) -> None:
        self.frames, self.width = frames, width
        self.rings: dict[str, deque] = {}

    def add(self, camera: str, index: int, frame: np.ndarray) -> None:
        import cv2
        h, w = frame.shape[:2]
        if w > self.width:
            frame = cv2.resize(frame, (self.width, round(h * self.width / w / 2) * 2), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            self.rings.setdefault(camera, deque(maxlen=self.frames)).append((index, jpeg))

    def write(self, camera: str, first: int, last: int, seconds: float, path: Path) -> int:
        """The kept frames of ``camera`` with index in [first, last] as an MP4 at ``path`` playing in about
        ``seconds`` (the track's wall time: frames dropped while the machine was behind shorten nothing); how many
        frames it holds (0: nothing kept, no file)."""
        import cv2
        kept = [jpeg for i, jpeg in self.rings.get(camera, ()) if first <= i <= last]
        if not kept:
            return 0
        fps = min(30.0, max(1.0, len(kept) / seconds)) if seconds > 0 else 10.0
        first_frame = cv2.imdecode(kept[0], cv2.IMREAD_COLOR)
        h, w = first_frame.shape[:2]
        path.parent.mkdir(parents=True, exist_ok=True)
        # decoded one at a time: a whole track's frames at once would be tens of MB that come and go with each
        # sighting, and the service's memory would swing with them
        with VideoSink(path, fps, (w, h), encoder="libx264") as sink:
            sink.write(first_frame)
            for j in kept[1:]:
                sink.write(cv2.imdecode(j, cv2.IMREAD_COLOR))
        return len(kept)


__all__ = ["ClipRing"]
