from __future__ import annotations

import json

import numpy as np
import pytest

from allinone.records import Identity, Decision, DecisionEvent, Detections, Embedding, Silhouettes, Track


def test_detections_shapes_are_checked():
    d = Detections(np.zeros((3, 4)), np.ones(3))
    assert d.xyxy.dtype == np.float32 and len(d) == 3
    with pytest.raises(ValueError, match="xyxy"):
        Detections(np.zeros((3, 5)), np.ones(3))
    with pytest.raises(ValueError, match="confidence"):
        Detections(np.zeros((3, 4)), np.ones(2))
    with pytest.raises(ValueError, match="track_id"):
        Detections(np.zeros((3, 4)), np.ones(3), np.arange(2))
    e = Detections.empty()
    assert e.xyxy.shape == (0, 4) and len(e) == 0


def test_track_frames_must_increase():
    t = Track(1)
    t.add(3, np.zeros(4), 0.5)
    with pytest.raises(ValueError):
        t.add(3, np.zeros(4), 0.5)
    t.add(7, np.ones(4), 0.6)
    assert (t.first_frame, t.last_frame, t.n_frames) == (3, 7, 2)


def test_silhouettes_embedding_decision_checks():
    with pytest.raises(ValueError):
        Silhouettes(1, np.zeros((2, 64, 44), np.uint8), np.arange(2))
    with pytest.raises(ValueError):
        Silhouettes(1, np.zeros((2, 64, 64), np.uint8), np.arange(3))
    assert len(Silhouettes(1, np.zeros((2, 64, 64), np.uint8), np.arange(2))) == 2
    with pytest.raises(ValueError):
        Embedding("v", 1, np.zeros((256, 16), np.float64), 10)
    with pytest.raises(ValueError):
        Decision("p", 1, "unknown", "G2", 3.0, "no_candidate", [])  # an identity only for a match
    with pytest.raises(ValueError):
        Decision("p", 1, "unknown", None, 3.0, None, [])  # every unknown has a reason
    with pytest.raises(ValueError):
        Decision("p", 1, "unknown", None, 3.0, "bad luck", [])
    with pytest.raises(ValueError):
        Decision("p", 1, "match", "G2", 3.0, "taken", [])  # a match has no reason
    Decision("p", 1, "match", "G2", 3.0, None, [("G2", 3.0)])
    with pytest.raises(ValueError):
        Embedding("v", 1, np.zeros((4, 2), np.float32), 10, 5, 4)  # frame range backwards
    with pytest.raises(ValueError):
        Identity("Ann", ())
    with pytest.raises(ValueError):
        Identity("Ann", (Embedding("v", 1, np.zeros((4, 2), np.float32), 3),
                         Embedding("v", 2, np.zeros((4, 3), np.float32), 3)))
    with pytest.raises(ValueError):
        Silhouettes(1, np.zeros((0, 64, 64), np.uint8), np.arange(0), {"blurry": 3})


def test_decision_event_checks_and_serializes():
    d = Decision("cam 1", 7, "match", "Ann", 0.1234567891, None, [("Ann", 0.1234567891)])
    e = DecisionEvent.of(d, (3, 90), 42, True)
    j = e.to_json()
    assert j["stream"] == "cam 1" and j["track"] == 7 and j["identity"] == "Ann" and j["distance"] == 0.123457
    assert (j["first_frame"], j["last_frame"], j["silhouettes"], j["final"]) == (3, 90, 42, True)
    assert "lr" not in j and "lr_verbal" not in j and j["wall_time"].endswith("+00:00")  # no LR: no LR keys
    assert json.loads(json.dumps(j)) == j  # plain JSON values
    base = dict(stream="cam", track=1, status="unknown", identity=None, distance=1.0, reason="no_candidate",
                first_frame=1, last_frame=5, silhouettes=3, final=False, wall_time="2026-12-06T02:00:00.000+00:00")
    DecisionEvent(**base)
    for bad in ({"stream": ""}, {"status": "maybe"}, {"identity": "Ann"}, {"reason": None},
                {"distance": float("nan")}, {"first_frame": 0}, {"last_frame": None}, {"first_frame": 9},
                {"silhouettes": -1}, {"final": 1}, {"wall_time": "yesterday"}, {"lr": 3.0},
                {"lr": -1.0, "lr_verbal": "x"}):
        with pytest.raises(ValueError):
            DecisionEvent(**{**base, **bad})
    assert DecisionEvent(**{**base, "lr": 30.0, "lr_verbal": "moderate support"}).to_json()["lr"] == 30.0
