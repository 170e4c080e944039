"""Result-video drawing: labels of people side by side never hide each other; distances in three significant digits."""
from __future__ import annotations

import numpy as np
import pytest

from allinone.records import Decision
from allinone.results.render import Box, decision_box, draw, place_labels, significant


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


@pytest.mark.parametrize("boxes", [
    # two walkers side by side, 60 px apart, each label 150 px wide: tags above both boxes would overlap
    [(100, 200, 180, 500), (160, 205, 240, 505)],
    # four in a row, touching, at the top edge of the frame (no room above)
    [(0, 0, 90, 300), (90, 2, 180, 300), (180, 0, 270, 310), (270, 1, 360, 300)],
    # one person right in front of another (nested boxes)
    [(300, 100, 420, 500), (310, 110, 400, 480)],
])
def test_labels_never_overlap_and_stay_in_the_frame(boxes):
    frame_wh = (640, 480)
    sizes = [(150, 22)] * len(boxes)
    tags = place_labels(boxes, sizes, frame_wh)
    assert len(tags) == len(boxes)
    for k, (tag, size) in enumerate(zip(tags, sizes)):
        assert (tag[2] - tag[0], tag[3] - tag[1]) == size
        assert 0 <= tag[0] and tag[2] <= frame_wh[0] and 0 <= tag[1] and tag[3] <= frame_wh[1]
        for other in tags[k + 1:]:
            assert _overlap(tag, other) == 0, (tag, other)
    # a tag stays with its box: it touches or lies inside the box's column
    for (x1, y1, x2, y2), tag in zip(boxes, tags):
        assert tag[0] <= x2 and tag[2] >= x1


def test_a_lone_label_goes_above_its_box():
    assert place_labels([(100, 200, 180, 500)], [(60, 20)], (640, 480)) == [(100, 180, 160, 200)]


def test_drawn_labels_of_side_by_side_people_are_both_readable():
    """Drawn for real: each label's own colour fills a whole tag-sized area (not painted over by the other)."""
    frame = np.zeros((480, 640, 3), np.uint8)
    red, blue = (0, 0, 255), (255, 0, 0)
    draw(frame, [Box(np.array([100, 200, 180, 470.0]), red, "P1 Alexandra 0.0312"),
                 Box(np.array([150, 204, 230, 474.0]), blue, "P2 Bartholomew 0.0401")])
    for color in (red, blue):
        ys, xs = np.nonzero(np.all(frame == color, axis=2))
        # the filled tag: wide as its text (well over 100 px at this size), not cut by the other tag
        assert xs.max() - xs.min() > 100


@pytest.mark.parametrize("x, text", [(0.03, "0.0300"), (0.0351, "0.0351"), (0.123456, "0.123"), (1.0, "1.00"),
                                     (12.345, "12.3"), (123.4, "123"), (0.000812, "0.000812")])
def test_three_significant_digits(x, text):
    assert significant(x) == text


def test_an_unknown_label_says_why_in_the_consoles_words():
    from allinone.results.summary import console_summary
    for reason in ("no_candidate", "taken"):
        d = Decision("probe", 3, "unknown", None, 0.5, reason, [])
        label = decision_box(np.array([0, 0, 10, 10.0]), 3, d, {}).label
        row = {"probe_video": "probe", "probe_track": 3, "status": "unknown", "reason": reason, "distance": 0.5}
        console = console_summary({"matches": [row], "threshold": {"value": 0.4}}, ".")
        said = label.removeprefix("P3 unknown (").removesuffix(")")
        assert reason not in label and said and f"unknown: {said}" in console, (label, console)


def test_result_label_shows_three_significant_digits():
    d = Decision("probe", 1, "match", "Ann", 0.03, None, [])
    assert decision_box(np.array([0, 0, 10, 10.0]), 1, d, {"Ann": 1}).label == "P1 Ann 0.0300"
