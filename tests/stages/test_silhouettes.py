"""The silhouette stage's quality filter, mask clipping and frame-rate stride, on hand-made boxes."""
from __future__ import annotations

import numpy as np
import pytest

from allinone.config import QualityConfig, SegmentConfig
from allinone.records import Detections
from allinone.segment import build_segmenter
from allinone.segment.crop import box_to_crop, square_crop
from allinone.stages.silhouettes import SilhouetteStage, VideoSilhouettes, covered_by_front, frame_stride


@pytest.mark.parametrize("fps, step, target, want", [(30, 1, 30, 1), (25, 1, 30, 1), (44.9, 1, 30, 1),
                                                     (50, 1, 30, 2), (59.94, 1, 30, 2), (60, 2, 30, 4),
                                                     (120, 1, 30, 4), (60, 1, 0, 1)])
def test_frame_stride(fps, step, target, want):
    assert frame_stride(fps, step, target) == want


def test_covered_by_front_person():
    back = [100, 100, 200, 300]  # bottom at 300
    front = [150, 120, 260, 400]  # bottom at 400: nearer the camera, covers x 150..200, y 120..300 of back
    side = [0, 0, 50, 500]
    boxes = np.array([back, front, side], float)
    covered, fronts = covered_by_front(boxes, boxes)
    assert covered[0] == pytest.approx(50 * 180 / (100 * 200))  # 0.45
    assert covered[1] == 0.0 and covered[2] == 0.0  # the front person is never "covered" by the one behind
    np.testing.assert_array_equal(fronts[0], [front])
    assert len(fronts[1]) == 0


def test_quality_reasons_and_counts(shared):
    seg = build_segmenter(str(shared / "weights/pphumanseg_onnx_model.onnx"), "cpu")
    stage = SilhouetteStage(seg, SegmentConfig(batch_size=1), QualityConfig(), high_threshold=0.5)
    timings = {"crop": 0.0, "segment": 0.0, "write": 0.0, "align": 0.0}
    v = stage.video(30.0, (480, 640), None, timings)
    frame = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([[1, 100, 80, 400],  # touches the left border (x1 <= 2)
                      [200, 100, 300, 350],  # behind the next one, 60% covered
                      [240, 90, 400, 460],  # in front
                      [450, 100, 550, 400]], np.float32)  # low score, kept only by the second association
    scores = np.array([0.9, 0.9, 0.9, 0.3], np.float32)
    tracked = Detections(boxes, scores, np.array([1, 2, 3, 4]))
    v.add(frame, 0, tracked, Detections(boxes, scores))
    sils = v.finish()
    got = {t: {k: n for k, n in s.dropped.items() if n} for t, s in sils.items()}
    assert {t: got[t] for t in (1, 2, 4)} == {1: {"border": 1}, 2: {"occluded": 1}, 4: {"low_score": 1}}
    assert [len(sils[t]) for t in (1, 2, 4)] == [0, 0, 0]
    # track 3 passed the filter and was segmented (a black frame may give an empty mask, counted as such)
    assert len(sils[3]) + got[3].get("empty_mask", 0) == 1 and set(got[3]) <= {"empty_mask"}


def test_mask_is_clipped_to_the_own_box_minus_people_in_front():
    frame_hw, size, pad = (480, 640), (192, 192), 0.1
    own = np.array([200, 100, 300, 350], float)
    front = np.array([280, 90, 400, 460], float)
    clip = box_to_crop(own, pad, frame_hw, size, np.stack([own, front]))
    mask = np.full((192, 192), 255, np.uint8)
    out = VideoSilhouettes._clip(mask, clip)
    # the own box maps inside the crop with the 10% pad around it: rows 192 * 25/300 .. 192 * 275/300
    ys, xs = np.nonzero(out)
    side = 300  # padded window 190..310 x 75..375: 120 x 300, so side 300, x offset 90
    assert ys.min() == pytest.approx(192 * 25 / side, abs=1) and ys.max() == pytest.approx(192 * 275 / side, abs=1)
    assert xs.min() == pytest.approx(192 * (200 - 190 + 90) / side, abs=1)
    # right of x = 280 belongs to the person in front
    assert xs.max() < 192 * (280 - 190 + 90) / side + 1
    # consistency with the crop itself: a frame painted white inside `own` is white at the clip box in the crop
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:350, 200:300] = 255
    crop = square_crop(img, own, pad, size, 0)
    x1, y1, x2, y2 = clip[0]
    assert crop[int(y1) + 2:int(y2) - 2, int(x1) + 2:int(x2) - 2].min() == 255
    assert crop[:int(y1) - 2].max() == 0
