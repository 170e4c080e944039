"""Top-down keypoint models exported to ONNX, run with ONNX Runtime (batched).

Input [N, 3, h, w] float32 RGB normalised with ImageNet's mean and std in 0-255 (mmpose's data preprocessor, which
RTMPose, HRNet and ViTPose exports share). Three output forms are read, by shape:
- SimCC (RTMPose): two outputs [N, 17, k*w] and [N, 17, k*h]; a joint is at the argmax of each, over k; its score
  is the smaller of the two maxima (rtmlib's get_simcc_maximum);
- heatmaps [N, 17, h', w']: the argmax, moved a quarter pixel towards the higher neighbour (mmpose's MSRA
  decoding without its Gaussian refinement), score the heatmap's maximum;
- keypoints [N, 17, 3] (x, y, score) in input pixels.
Scores are clipped to [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from allinone.errors import UserError

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def decode_simcc(sx: np.ndarray, sy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, K, Lx], [N, K, Ly] → [N, K, 3] (x, y in input pixels, score)."""
    kx, ky = sx.shape[-1] / size[1], sy.shape[-1] / size[0]
    x = np.argmax(sx, axis=-1) / kx
    y = np.argmax(sy, axis=-1) / ky
    score = np.minimum(sx.max(axis=-1), sy.max(axis=-1))
    return np.stack([x, y, np.clip(score, 0, 1)], axis=-1).astype(np.float32)


def decode_heatmaps(hm: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, K, h', w'] → [N, K, 3] (x, y in input pixels of ``size`` = (h, w), score)."""
    n, k, hh, ww = hm.shape
    flat = hm.reshape(n, k, -1)
    idx = np.argmax(flat, axis=-1)
    py, px = np.divmod(idx, ww)
    x, y = px.astype(np.float64), py.astype(np.float64)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    inner_x = (px > 0) & (px < ww - 1)
    inner_y = (py > 0) & (py < hh - 1)
    dx = hm[ni, ki, py, np.clip(px + 1, 0, ww - 1)] - hm[ni, ki, py, np.clip(px - 1, 0, ww - 1)]
    dy = hm[ni, ki, np.clip(py + 1, 0, hh - 1), px] - hm[ni, ki, np.clip(py - 1, 0, hh - 1), px]
    x += np.where(inner_x, 0.25 * np.sign(dx), 0)
    y += np.where(inner_y, 0.25 * np.sign(dy), 0)
    sx, sy = size[1] / ww, size[0] / hh
    score = flat.max(axis=-1)
    return np.stack([x * sx, y * sy, np.clip(score, 0, 1)], axis=-1).astype(np.float32)


class OnnxPose:
    """crops uint8 [N, h, w, 3] BGR → float32 [N, 17, 3] (x, y in crop pixels, score)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") \
            else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise UserError(f"not a loadable ONNX model ({str(exc).splitlines()[0][:120]})", path) from exc
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(v, int) for v in shape[2:]):
            raise UserError(f"not a top-down keypoint model: input {shape} (expected [N, 3, h, w])", path)
        self.input_size = (int(shape[2]), int(shape[3]))
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.input_name = inp.name
        self.outputs = [o.shape for o in self.session.get_outputs()]
        if not (len(self.outputs) == 2 or (len(self.outputs) == 1 and len(self.outputs[0]) in (3, 4))):
            raise UserError(f"unknown keypoint output {self.outputs} (expected SimCC x/y, heatmaps [N, 17, h, w] "
                            "or keypoints [N, 17, 3])", path)
        self.name = "onnx"

    def _run(self, x: np.ndarray) -> np.ndarray:
        outs = self.session.run(None, {self.input_name: x})
        if len(outs) == 2:
            return decode_simcc(outs[0], outs[1], self.input_size)
        if outs[0].ndim == 4:
            return decode_heatmaps(outs[0], self.input_size)
        return np.concatenate([outs[0][..., :2], np.clip(outs[0][..., 2:3], 0, 1)], axis=-1).astype(np.float32)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        h, w = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 [N, {h}, {w}, 3], got {crops.dtype} {crops.shape}")
        x = (crops[..., ::-1].astype(np.float32) - MEAN) / STD
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        step = self.fixed_batch or max(len(x), 1)
        parts = [self._run(x[i:i + step]) for i in range(0, len(x), step)]
        out = np.concatenate(parts) if parts else np.zeros((0, 17, 3), np.float32)
        if out.shape[1:] != (17, 3):
            raise ValueError(f"the keypoint model gives {out.shape[1]} joints; COCO-17 models only")
        return out
