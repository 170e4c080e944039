"""Person detector on ultralytics YOLO (v8, 11, 26 ...): a .pt checkpoint, a model name, or a model .yaml."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np

from allinone.config import DetectConfig
from allinone.errors import UserError
from allinone.records import Detections

log = logging.getLogger(__name__)

PERSON = 0  # COCO class index
_BOX_TASKS = ("detect", "segment", "pose")  # tasks whose results carry axis-aligned person boxes


def _locate(spec: str) -> str:
    """What to hand to ``YOLO()`` for ``spec``: the spec itself when it is a file or a .yaml, or an official
    model name that is cached locally or may be downloaded. Raises UserError when neither can work, before
    ultralytics would try the network for an unknown name."""
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
        return spec
    from ultralytics.utils import SETTINGS, is_online
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    name = path.name if path.suffix else f"{path.name}.pt"
    if len(path.parts) > 1:
        raise UserError("detector model file not found", spec)
    if name not in GITHUB_ASSETS_NAMES:
        raise UserError("detector model file not found, and not an official ultralytics model name", spec)
    for local in (Path(name), Path(SETTINGS["weights_dir"]) / name):
        if local.is_file():
            return str(local)
    if not is_online():
        raise UserError(f"model weights {name} are not on this machine and cannot be downloaded (offline): "
                        f"place {name} in the working folder or pass the path to a .pt file", spec)
    return name  # ultralytics downloads it


class UltralyticsDetector:
    """An ultralytics YOLO model, person class only. Call it with a frame [h, w, 3] uint8 BGR.

    ``model``: a .pt path, an official name ("yolo11n.pt", "yolov8s"; downloaded by ultralytics when online),
    or a model .yaml (random weights: for tests only). ``threads`` is accepted for interface parity and ignored.
    """

    name = "ultralytics"

    def __init__(self, model: str, config: DetectConfig, device: str = "cpu", threads: int = 0) -> None:
        from ultralytics import YOLO

        from allinone.io.devices import resolve_device

        self.config = config
        self.device = resolve_device(device) if device == "auto" else device
        source = _locate(str(model))
        try:
            self._yolo = YOLO(source, verbose=False)
        except ConnectionError as exc:
            raise UserError(f"could not download the model weights ({exc}); place the file in the working "
                            f"folder or pass the path to a .pt file", model) from exc
        except FileNotFoundError as exc:
            raise UserError(f"detector model not found ({exc})", model) from exc
        except (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, AttributeError, TypeError, ValueError,
                ModuleNotFoundError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(f"cannot load ultralytics model ({type(exc).__name__}: {first_line})", model) from exc
        if self._yolo.task not in _BOX_TASKS:
            raise UserError(f"ultralytics model task is {self._yolo.task!r}; need one of {_BOX_TASKS}", model)
        self.path = None if self._yolo.ckpt_path is None else str(self._yolo.ckpt_path)
        class0 = self._yolo.names.get(PERSON) if isinstance(self._yolo.names, dict) else None
        if class0 != "person":
            log.warning("%s: class 0 is %r, not 'person'; its class-0 boxes are used as people", model, class0)

    def __call__(self, frame: np.ndarray) -> Detections:
        """frame [h, w, 3] uint8 BGR → person Detections in frame pixels."""
        return self.batch([frame])[0]

    def batch(self, frames: list[np.ndarray]) -> list[Detections]:
        """Several frames in one forward (what a GPU wants) → one Detections per frame, as one by one."""
        for frame in frames:
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frame must be uint8 [h, w, 3], got {frame.dtype} {frame.shape}")
        cfg = self.config
        results = self._yolo.predict(list(frames), classes=[PERSON], conf=cfg.score_threshold, iou=cfg.nms_iou,
                                     device=self.device, verbose=False)
        out = []
        for frame, result in zip(frames, results):
            xyxy = result.boxes.xyxy.cpu().numpy().astype(np.float32)
            scores = result.boxes.conf.cpu().numpy().astype(np.float32)
            h, w = frame.shape[:2]
            np.clip(xyxy[:, 0::2], 0, w, out=xyxy[:, 0::2])
            np.clip(xyxy[:, 1::2], 0, h, out=xyxy[:, 1::2])
            bw, bh = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
            keep = (scores >= cfg.score_threshold) & (bh >= cfg.min_box_height) & (bw > 0) & (bh > 0)
            out.append(Detections(xyxy[keep], scores[keep]))
        return out
