"""Which way up a video is: the user's turn, the file's rotation tag, or the quarter turn that finds people."""
from __future__ import annotations

import logging

from allinone.detect import Detector
from allinone.io.video import VideoSource, rotate
from allinone.results.words import count

log = logging.getLogger(__name__)


ROTATION_SAMPLES = 8  # frames spread over a video to decide whether its people stand upright


ROTATION_SCORE = 0.5  # a detection this confident counts as a person found


def choose_rotation(src: VideoSource, detector: Detector, mode: str) -> tuple[int, str]:
    """Degrees to turn ``src`` clockwise and why: the user's; 0 where the container's rotation tag already turned it
    (OpenCV applies it) or people are found upright; else the quarter turn that finds the most people."""
    if mode != "auto":
        return int(mode), "user"
    if src.rotation_meta:
        return 0, "metadata"
    samples = src.sample(ROTATION_SAMPLES)

    def people(deg: int) -> int:
        return sum(int((detector(rotate(f, deg)).confidence >= ROTATION_SCORE).sum()) for f in samples)

    if not samples or people(0) > 0:
        return 0, "upright"
    counts = {deg: people(deg) for deg in (90, 270, 180)}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] == 0:
        return 0, "upright"  # nobody at any turn: leave it as it is
    log.warning("%s: nobody is upright in %d sample frames and there is no rotation tag; turning it %d degrees "
                "clockwise, where %s found (override with --rotate)", src.path, len(samples), best,
                count(counts[best], "person was", "people were"))
    return best, "auto"
