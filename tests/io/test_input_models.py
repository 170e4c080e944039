"""The input models in a feature's identity: what is compared, and what is not known is never compared."""
from __future__ import annotations

from allinone.gallery.store import ModelInfo
from allinone.io.input_models import InputModel, InputModels

SEG_A = InputModel("/w/seg_a.onnx", "a" * 64)
SEG_B = InputModel("/w/seg_b", "b" * 64)
POSE_A = InputModel("/w/movenet.tflite", "c" * 64)
POSE_B = InputModel("/w/other_pose.onnx", "d" * 64)


def _model(inputs: InputModels) -> ModelInfo:
    return ModelInfo("e" * 64, "gaitgraph.pth", "gaitgraph", "euc", inputs=inputs)


def test_another_pose_model_is_refused_by_name_for_a_keypoint_model():
    stored = _model(InputModels(InputModel("", ""), POSE_A))
    why = stored.mismatch(_model(InputModels(InputModel("", ""), POSE_B)))
    assert "enrolled with pose model movenet.tflite" in why and "this run uses other_pose.onnx" in why
    assert "--pose-model /w/movenet.tflite" in why


def test_a_segmenter_against_none_is_refused_and_unknown_is_not_compared():
    with_seg = _model(InputModels(SEG_A, InputModel("", "")))
    without = _model(InputModels(InputModel("", ""), POSE_A))
    assert "this run uses none" in with_seg.mismatch(without)
    assert with_seg.mismatch(_model(InputModels())) is None  # a file from before: nothing known to compare
    assert _model(InputModels()).mismatch(with_seg) is None
    assert with_seg.mismatch(_model(InputModels(SEG_A, InputModel("", "")))) is None


def test_the_record_round_trips_and_an_older_record_is_unknown():
    m = InputModels(SEG_B, POSE_A)
    assert InputModels.from_json(m.to_json()) == m
    assert InputModels.from_json(None) == InputModels() and not InputModels.from_json({}).known
