"""MoveNet SinglePose (Google, Apache-2.0) as a TFLite model, run with LiteRT (the ``ai-edge-litert`` package).

Input [1, 192, 192, 3] uint8 RGB (Lightning; Thunder is 256): one person's square crop, no normalisation. Output
[1, 1, 17, 3]: (y, x, score) in 0-1 of the crop, COCO-17 order. The graph takes one crop per call, so a batch is a
loop (its batch axis can be resized, but the output stays one person).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from allinone.errors import UserError

log = logging.getLogger(__name__)


class MoveNetPose:
    """crops uint8 [N, h, w, 3] BGR → float32 [N, 17, 3] (x, y in crop pixels, score)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - listed in requirements.txt
            raise UserError("MoveNet .tflite models need the ai-edge-litert package (pip install ai-edge-litert)"
                            ) from exc
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=threads or None)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"not a loadable TFLite model ({str(exc).splitlines()[0][:120]})", path) from exc
        inp, out = self.interp.get_input_details()[0], self.interp.get_output_details()[0]
        shape, oshape = tuple(int(v) for v in inp["shape"]), tuple(int(v) for v in out["shape"])
        if len(shape) != 4 or shape[3] != 3 or oshape[-2:] != (17, 3):
            raise UserError(f"not a MoveNet SinglePose model: input {shape}, output {oshape} (expected "
                            "[1, h, w, 3] and [1, 1, 17, 3])", path)
        self.input_size = (shape[1], shape[2])
        self.dtype = inp["dtype"]
        self.in_index, self.out_index = inp["index"], out["index"]
        self.name = "movenet"

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        h, w = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (h, w, 3) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 [N, {h}, {w}, 3], got {crops.dtype} {crops.shape}")
        out = np.empty((len(crops), 17, 3), np.float32)
        for i, crop in enumerate(crops):
            x = np.ascontiguousarray(crop[None, :, :, ::-1]).astype(self.dtype, copy=False)
            self.interp.set_tensor(self.in_index, x)
            self.interp.invoke()
            yxs = self.interp.get_tensor(self.out_index).reshape(17, 3)
            out[i, :, 0] = yxs[:, 1] * w
            out[i, :, 1] = yxs[:, 0] * h
            out[i, :, 2] = yxs[:, 2]
        return out
