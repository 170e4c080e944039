"""A sighting's clip: the ring's frames of the track's span, in order, as a playable H.264 MP4."""
from __future__ import annotations

import av
import numpy as np

from allinone.watch.clips import ClipRing


def test_a_clip_holds_the_tracks_frames_in_order(tmp_path):
    ring = ClipRing(frames=20, width=320)
    for i in range(30):  # the ring keeps the last 20: frames 10..29
        frame = np.full((360, 640, 3), 0, np.uint8)
        frame[:, :, 1] = 8 * i  # green level says which frame it was
        ring.add("hall", i, frame)
    out = tmp_path / "clip.mp4"
    assert ring.write("hall", 5, 14, 2.0, out) == 5  # 10..14 are still kept
    with av.open(str(out)) as f:
        stream = f.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (320, 180)
        greens = [float(fr.to_ndarray(format="rgb24")[:, :, 1].mean()) for fr in f.decode(stream)]
    # frames 10..14 in order (JPEG and H.264's colour conversion move a level by a few units)
    assert np.allclose(greens, [8 * i for i in range(10, 15)], atol=5) and np.all(np.diff(greens) > 4)
    assert ring.write("hall", 40, 50, 1.0, tmp_path / "none.mp4") == 0 and not (tmp_path / "none.mp4").exists()
    assert ring.write("yard", 0, 50, 1.0, tmp_path / "none.mp4") == 0
