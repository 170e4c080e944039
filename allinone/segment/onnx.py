"""Two-class person segmentation models exported to ONNX (e.g. PP-HumanSeg via paddle2onnx), run with ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from allinone.errors import UserError, first_line
from allinone.segment.crop import check_crops, person_probability, resize_probs, to_model_input

# Square side fed to a model whose height and width are dynamic. Mean mask IoU against the Paddle model on 97
# detector crops: 160 → 0.68, 192 → 0.785, 224 → 0.79, 256 → 0.805, 288 → 0.80, 320 → 0.77, 398 → 0.73. The
# small gain at 256 is the same when a 192 crop is merely upsampled (it is the person's scale, not detail) and
# costs ~1.8× the time, so 192: same crops and mask size as the Paddle model and the reference silhouettes.
DEFAULT_DYNAMIC_SIDE = 192


def _ort_errors() -> tuple[type[BaseException], ...]:
    """Exception types ONNX Runtime raises for a model it cannot load or run."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [getattr(state, n) for n in ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError",
                                         "RuntimeException", "InvalidProtobuf", "ModelLoaded",
                                         "NotImplemented", "InvalidGraph", "EPFail")
             if isinstance(getattr(state, n, None), type)]
    return (*found, RuntimeError, OSError, ValueError)


def _dim(v) -> int | None:
    """A fixed dimension as int; a symbolic/unknown one as None."""
    return v if isinstance(v, int) and v > 0 else None


class OnnxSegmenter:
    """A 2-class segmentation ONNX model: one float input [N, 3, H, W], first output [N, 2, H', W'].

    Input is normalised like PaddleSeg's default (RGB, (x / 255 - 0.5) / 0.5). With fixed H, W the square crop
    is resized to them and the probabilities back; with dynamic H, W the crop is fed as a ``size`` square.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0, size: int | None = None,
                 mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
                 std: tuple[float, float, float] = (0.5, 0.5, 0.5)):
        import onnxruntime as ort

        from allinone.io.devices import onnx_providers, ort_session_options

        path = Path(path)
        if not path.is_file():
            raise UserError("ONNX segmentation model not found", path)
        errors = _ort_errors()
        try:
            self._session = ort.InferenceSession(str(path), sess_options=ort_session_options(threads),
                                                 providers=onnx_providers(device))
        except errors as exc:
            raise UserError(f"ONNX Runtime cannot load the model ({first_line(exc)})", path) from exc

        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise UserError(f"expected one image input, the model has {len(inputs)}: "
                            f"{[i.name for i in inputs]}", path)
        inp = inputs[0]
        if inp.type != "tensor(float)" or len(inp.shape) != 4 or inp.shape[1] != 3:
            raise UserError(f"expected a float input [N, 3, H, W], got {inp.name} {inp.type} {inp.shape}", path)
        if not outputs or len(outputs[0].shape) != 4 or _dim(outputs[0].shape[1]) not in (None, 2):
            got = [(o.name, o.shape) for o in outputs]
            raise UserError(f"expected a 2-class output [N, 2, H, W], got {got}", path)
        self._input_name = inp.name
        self._output_name = outputs[0].name
        self._batch = _dim(inp.shape[0])  # a fixed batch size (export without a dynamic batch axis) or None
        h, w = _dim(inp.shape[2]), _dim(inp.shape[3])
        if h is not None and w is not None:
            self._model_hw: tuple[int, int] | None = (h, w)
            side = size or max(h, w)
        elif h is None and w is None:
            self._model_hw = None
            side = size or DEFAULT_DYNAMIC_SIDE
        else:
            raise UserError(f"input {inp.name} {inp.shape} has one fixed and one dynamic side", path)
        self.input_size: tuple[int, int] = (int(side), int(side))
        self._mean = np.asarray(mean, np.float32)
        self._std = np.asarray(std, np.float32)

        # one zero batch through the model: catches graphs that load but cannot run or give the wrong shape
        probe_n = self._batch or 1
        try:
            out = self._run(np.zeros((probe_n, *self.input_size, 3), np.uint8))
        except errors as exc:
            raise UserError(f"the model fails on a [{probe_n}, 3, H, W] input ({first_line(exc)})", path) from exc
        if out.ndim != 4 or out.shape[:2] != (probe_n, 2):
            raise UserError(f"expected output [N, 2, H, W], the model gives {list(out.shape)}", path)

    def _run(self, crops: np.ndarray) -> np.ndarray:
        """uint8 [n, s, s, 3] → raw model output [n, 2, h', w']."""
        if self._model_hw is not None and self._model_hw != self.input_size:
            mh, mw = self._model_hw
            crops = np.stack([cv2.resize(c, (mw, mh), interpolation=cv2.INTER_LINEAR) for c in crops])
        x = to_model_input(crops, self._mean, self._std)  # [n, 3, h, w]
        if self._batch is None or self._batch == len(x):
            return self._session.run([self._output_name], {self._input_name: x})[0]
        # fixed-batch export: run in chunks of that batch, padding the last one
        b = self._batch
        chunks = []
        for i in range(0, len(x), b):
            part = x[i:i + b]
            if len(part) < b:
                part = np.concatenate([part, np.zeros((b - len(part), *part.shape[1:]), part.dtype)])
            chunks.append(self._session.run([self._output_name], {self._input_name: part})[0])
        return np.concatenate(chunks)[:len(x)]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """crops: uint8 [N, s, s, 3] BGR at ``input_size`` → person probability float32 [N, s, s]."""
        check_crops(crops, self.input_size)
        if len(crops) == 0:
            return np.zeros((0, *self.input_size), np.float32)
        return resize_probs(person_probability(self._run(crops)), self.input_size)
