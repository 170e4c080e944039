"""YOLOX person detector on ONNX Runtime.

Takes a YOLOX export with the raw head output (Megvii's ``export_onnx.py`` without ``--decode_in_inference``):
input [1, 3, H, W] float32 BGR 0–255, letterboxed top-left with gray 114; output [1, A, 5 + C] with, per anchor,
(dx, dy, log w, log h) in stride units, then sigmoid objectness and C sigmoid class probabilities.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from allinone.config import DetectConfig
from allinone.errors import UserError, first_line
from allinone.records import Detections

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
PAD_VALUE = 114
PERSON = 0  # COCO class index


def letterbox(frame: np.ndarray, input_hw: tuple[int, int], out: np.ndarray | None = None
              ) -> tuple[np.ndarray, float]:
    """Resize ``frame`` [h, w, 3] uint8 to fit ``input_hw`` keeping its aspect, top-left on a 114 canvas.

    Returns the network input [1, 3, H, W] float32 (BGR, 0–255; written into ``out`` when given) and the scale
    ratio r (network pixels = frame pixels × r).
    """
    in_h, in_w = input_hw
    h, w = frame.shape[:2]
    ratio = min(in_h / h, in_w / w)
    new_w, new_h = int(w * ratio), int(h * ratio)  # truncation, as YOLOX's preproc does
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if out is None:
        out = np.empty((1, 3, in_h, in_w), np.float32)
    out[0, :, :new_h, :new_w] = resized.transpose(2, 0, 1)
    out[0, :, new_h:, :] = PAD_VALUE
    out[0, :, :new_h, new_w:] = PAD_VALUE
    return out, ratio


def anchor_grid(input_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Cell coordinates and strides of every head anchor, in YOLOX's output order.

    Returns cells [A, 2] float32 (gx, gy) and stride [A, 1] float32, levels in ``strides`` order, each level
    row-major (gy outer, gx inner); A = sum over strides of (H // s) * (W // s).
    """
    cells, stride_col = [], []
    for s in strides:
        gh, gw = input_hw[0] // s, input_hw[1] // s
        gy, gx = np.divmod(np.arange(gh * gw), gw)
        cells.append(np.stack([gx, gy], axis=1))
        stride_col.append(np.full((gh * gw, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(stride_col).astype(np.float32)


def decode_persons(raw: np.ndarray, cells: np.ndarray, strides: np.ndarray, ratio: float,
                   score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes from one image's raw YOLOX head output.

    raw [A, 5 + C]; cells [A, 2], strides [A, 1] from :func:`anchor_grid`; ratio from :func:`letterbox`.
    Returns xyxy [N, 4] float32 in frame pixels (not clipped, no NMS) and scores [N] float32
    (objectness × person probability), for the anchors scoring at least ``score_threshold``.
    """
    scores = raw[:, 4] * raw[:, 5 + PERSON]
    idx = np.flatnonzero(scores >= score_threshold)
    sel = raw[idx]
    centre = (sel[:, 0:2] + cells[idx]) * strides[idx]
    half = np.exp(sel[:, 2:4]) * strides[idx] * 0.5
    xyxy = np.concatenate([centre - half, centre + half], axis=1) / ratio
    return xyxy.astype(np.float32, copy=False), scores[idx].astype(np.float32, copy=False)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of the boxes kept, best first. A box goes when its IoU with a kept one exceeds the
    threshold. xyxy [N, 4], scores [N]."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (xyxy[:, k] for k in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(raw: np.ndarray, cells: np.ndarray, strides: np.ndarray, ratio: float,
                frame_hw: tuple[int, int], config: DetectConfig) -> Detections:
    """Raw head output [A, 5 + C] → final person Detections: decode, score threshold, NMS, clip to the frame,
    drop boxes lower than ``config.min_box_height``."""
    xyxy, scores = decode_persons(raw, cells, strides, ratio, config.score_threshold)
    keep = nms(xyxy, scores, config.nms_iou)
    xyxy, scores = xyxy[keep], scores[keep]
    h, w = frame_hw
    np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
    bw, bh = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    keep = (bh >= config.min_box_height) & (bw > 0) & (bh > 0)  # boxes clipped to nothing go too
    return Detections(xyxy[keep], scores[keep])


def check_yolox_io(input_shape: list, output_shape: list, path: str) -> tuple[int, int]:
    """Check a model's input/output shapes are a raw YOLOX head's; return the input (H, W).

    Symbolic dimensions (str/None) are accepted for the batch and in ``output_shape``; the input's H and W must be
    fixed. Raises UserError naming ``path`` otherwise.
    """
    if len(input_shape) != 4 or input_shape[1] != 3 or (isinstance(input_shape[0], int) and input_shape[0] != 1):
        raise UserError(f"not a YOLOX model: input must be one image [1, 3, H, W], got {input_shape}", path)
    in_h, in_w = input_shape[2], input_shape[3]
    if not (isinstance(in_h, int) and isinstance(in_w, int) and in_h > 0 and in_w > 0):
        raise UserError(f"YOLOX model input must have a fixed size [1, 3, H, W], got {input_shape}", path)
    if in_h % max(STRIDES) or in_w % max(STRIDES):
        raise UserError(f"YOLOX input size {in_h}x{in_w} is not a multiple of {max(STRIDES)}", path)
    anchors = sum((in_h // s) * (in_w // s) for s in STRIDES)
    if len(output_shape) != 3:
        raise UserError(f"not a raw YOLOX head: output must be [1, {anchors}, 5 + classes], got {output_shape}",
                        path)
    batch, a, d = output_shape
    if (isinstance(batch, int) and batch != 1) or (isinstance(a, int) and a != anchors) \
            or (isinstance(d, int) and d < 6):
        raise UserError(f"not a raw YOLOX head: output must be [1, {anchors}, 5 + classes] for input "
                        f"{in_h}x{in_w} (strides {STRIDES}), got {output_shape}", path)
    return in_h, in_w


class YoloxOnnxDetector:
    """YOLOX (raw head export) on ONNX Runtime, person class only. Call it with a frame [h, w, 3] uint8 BGR."""

    name = "yolox-onnx"

    def __init__(self, path: str | Path, config: DetectConfig, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        from allinone.io.devices import onnx_providers, ort_session_options, resolve_device

        self.path = str(path)
        self.config = config
        if not Path(path).is_file():
            raise UserError("YOLOX model file not found", self.path)
        load_errors = (ort_errors.Fail, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph,
                       ort_errors.NoSuchFile, ort_errors.InvalidArgument, ort_errors.NotImplemented,
                       ort_errors.RuntimeException)
        providers = onnx_providers(resolve_device(device) if device == "auto" else device)
        try:
            self.session = ort.InferenceSession(self.path, sess_options=ort_session_options(threads),
                                                providers=providers)
        except load_errors as exc:
            raise UserError(f"cannot load ONNX model ({first_line(exc)})", self.path) from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"not a YOLOX model: expected 1 input and 1 output, got {len(inputs)} and "
                            f"{len(outputs)}", self.path)
        if inputs[0].type != "tensor(float)":
            raise UserError(f"not a YOLOX model: input must be float32, got {inputs[0].type}", self.path)
        self.input_hw = check_yolox_io(list(inputs[0].shape), list(outputs[0].shape), self.path)
        self._input_name = inputs[0].name
        self._cells, self._strides = anchor_grid(self.input_hw)
        self._blob = np.full((1, 3, *self.input_hw), PAD_VALUE, np.float32)
        try:  # one dry run: checks the real output shape (declared dims may be symbolic) and warms the session
            out = self.session.run(None, {self._input_name: self._blob})[0]
        except load_errors as exc:
            raise UserError(f"ONNX model fails to run on a {self.input_hw} input ({first_line(exc)})",
                            self.path) from exc
        check_yolox_io(list(inputs[0].shape), list(out.shape), self.path)
        log.info("YOLOX %s: input %dx%d, %d classes, providers %s", self.path, *self.input_hw,
                 out.shape[2] - 5, self.session.get_providers())

    def __call__(self, frame: np.ndarray) -> Detections:
        """frame [h, w, 3] uint8 BGR → person Detections in frame pixels."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 [h, w, 3], got {frame.dtype} {frame.shape}")
        blob, ratio = letterbox(frame, self.input_hw, out=self._blob)
        raw = self.session.run(None, {self._input_name: blob})[0][0]
        return postprocess(raw, self._cells, self._strides, ratio, frame.shape[:2], self.config)

    def batch(self, frames: list[np.ndarray]) -> list[Detections]:
        """One Detections per frame. YOLOX raw-head exports reshape with a fixed batch of 1 (the shared nano model
        does), so the frames go through one run each."""
        return [self(f) for f in frames]
