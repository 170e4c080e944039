"""PaddleSeg inference models (PP-HumanSeg) run with ``paddle.inference``."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from allinone.errors import UserError, first_line, reclaim_signals
from allinone.segment.crop import check_crops, person_probability, resize_probs, to_model_input

log = logging.getLogger(__name__)

# PaddleSeg's Normalize when deploy.yaml gives no mean/std.
_DEFAULT_MEAN = (0.5, 0.5, 0.5)
_DEFAULT_STD = (0.5, 0.5, 0.5)


def _read_deploy(model_dir: Path) -> dict:
    """deploy.yaml → {'model': Path, 'params': Path, 'input_size': (h, w), 'mean': (3,), 'std': (3,)}."""
    import yaml

    cfg_path = model_dir / "deploy.yaml"
    if not cfg_path.is_file():
        raise UserError("PaddleSeg model folder has no deploy.yaml", model_dir)
    try:
        doc = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read deploy.yaml ({type(exc).__name__})", cfg_path) from exc
    deploy = doc.get("Deploy") if isinstance(doc, dict) else None
    if not isinstance(deploy, dict) or not isinstance(deploy.get("model"), str) \
            or not isinstance(deploy.get("params"), str):
        raise UserError("deploy.yaml has no Deploy.model / Deploy.params entries", cfg_path)

    input_size = None
    mean, std = _DEFAULT_MEAN, _DEFAULT_STD
    for t in deploy.get("transforms") or []:
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "Resize":
            size = t.get("target_size", (512, 512))  # PaddleSeg's Resize default
            if isinstance(size, int):
                size = (size, size)
            if not (isinstance(size, (list, tuple)) and len(size) == 2
                    and all(isinstance(v, int) and v > 0 for v in size)):
                raise UserError(f"deploy.yaml Resize target_size must be [width, height], got {size!r}",
                                cfg_path)
            input_size = (int(size[1]), int(size[0]))  # PaddleSeg gives (w, h)
        elif kind == "Normalize":
            mean, std = t.get("mean", _DEFAULT_MEAN), t.get("std", _DEFAULT_STD)
            try:
                mean_a, std_a = np.asarray(mean, np.float64), np.asarray(std, np.float64)
            except (TypeError, ValueError):
                mean_a = std_a = np.zeros(0)
            if mean_a.shape != (3,) or std_a.shape != (3,) or np.any(std_a == 0):
                raise UserError(f"deploy.yaml Normalize needs 3 means and 3 non-zero stds, got "
                                f"mean={mean!r} std={std!r}", cfg_path)
        else:
            raise UserError(f"deploy.yaml transform {kind!r} is not supported (only Resize and Normalize)",
                            cfg_path)
    if input_size is None:
        raise UserError("deploy.yaml has no Resize transform, so the model's input size is unknown", cfg_path)
    model, params = model_dir / deploy["model"], model_dir / deploy["params"]
    for f in (model, params):
        if not f.is_file():
            raise UserError("model file named in deploy.yaml is missing", f)
    return {"model": model, "params": params, "input_size": input_size,
            "mean": np.asarray(mean, np.float32), "std": np.asarray(std, np.float32)}


def _available_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def _check_program(model: Path) -> None:
    """Parse a legacy .pdmodel program before handing it to the predictor: paddle 3.x can crash the whole
    process (SIGSEGV) on a .pdmodel that is not a program at all, while this parse fails cleanly."""
    if model.suffix != ".pdmodel":
        return
    try:
        from paddle.base import core
    except ImportError:  # layout of a future paddle: skip the pre-check, the predictor still validates
        return
    try:
        program = core.ProgramDesc(model.read_bytes())
        ok = program.num_blocks() > 0 and program.block(0).op_size() > 0
    except (ValueError, RuntimeError) as exc:
        raise UserError("not a readable Paddle program (corrupt or truncated .pdmodel)", model) from exc
    if not ok:
        raise UserError("Paddle program is empty", model)


class PaddleSegmenter:
    """A PaddleSeg 2-class inference model (deploy.yaml + model.pdmodel + model.pdiparams).

    Built once: the predictor is created here and reused for every call. On CPU it runs with oneDNN
    (``mkldnn=True``: on 2 cores ~6 ms/crop at batch 8-16 vs ~15 without, ~8 vs ~16 at batch 1; outputs equal
    to 1.3e-6; costs ~1 s more to build) and ``threads`` math threads (0 = one per available core).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int = 0, mkldnn: bool = True):
        # Paddle's Intel OpenMP threads spin for 200 ms after each parallel region by default, taking the cores
        # from the detector that runs next (2 cores, 4-person plaza video: YOLOX 20.1 → 11.5 ms/frame in the
        # pipeline, 10.8 → 12.6 frames/s end to end with 0). Read when the OpenMP runtime starts, so set before
        # Paddle is imported; a value the user exported wins.
        os.environ.setdefault("KMP_BLOCKTIME", "0")
        with warnings.catch_warnings():  # paddle warns at import that no C++ compiler cache is installed
            warnings.filterwarnings("ignore", message=".*ccache.*")
            import paddle
            import paddle.inference as pdi
        # Paddle's C++ signal handlers (installed at import) turn SIGTERM into a crash dump and a kill: the
        # process's signals stay Python's, so SIGTERM ends a command as Ctrl-C does (errors.Interrupted)
        getattr(paddle, "disable_signal_handler", lambda: None)()
        reclaim_signals()

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise UserError("PaddleSeg model folder not found", model_dir)
        spec = _read_deploy(model_dir)
        self.input_size: tuple[int, int] = spec["input_size"]
        self._mean, self._std = spec["mean"], spec["std"]
        _check_program(spec["model"])

        config = pdi.Config(str(spec["model"]), str(spec["params"]))
        config.disable_glog_info()
        config.switch_ir_optim(True)
        config.enable_memory_optim()
        if device == "cuda" and paddle.is_compiled_with_cuda():
            config.enable_use_gpu(256, 0)
            self.device = "cuda"
        else:
            if device == "cuda":
                log.warning("paddle is built without CUDA; running the segmenter on CPU")
            config.disable_gpu()
            n = threads if threads > 0 else _available_cores()
            config.set_cpu_math_library_num_threads(n)
            if mkldnn:
                config.enable_mkldnn()
                # batch sizes vary between calls: keep a few shape-specialised kernels, not an unbounded set
                config.set_mkldnn_cache_capacity(8)
            else:
                config.disable_mkldnn()
            self.device = "cpu"
        try:
            self._predictor = pdi.create_predictor(config)
        except (RuntimeError, ValueError, OSError) as exc:
            culprit = spec["params"] if "param" in str(exc).lower() else spec["model"]
            raise UserError(f"Paddle cannot load the model ({first_line(exc)})", culprit) from exc
        names = self._predictor.get_input_names()
        if len(names) != 1:
            raise UserError(f"expected a model with one image input, it has {len(names)}: {names}",
                            spec["model"])
        self._input = self._predictor.get_input_handle(names[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])
        # one zero crop through the model: catches programs that load but cannot run or are not 2-class
        try:
            out = self._run(np.zeros((1, *self.input_size, 3), np.uint8))
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"the model fails on a [1, 3, {self.input_size[0]}, {self.input_size[1]}] input "
                            f"({first_line(exc)})", spec["model"]) from exc
        if out.ndim != 4 or out.shape[:2] != (1, 2):
            raise UserError(f"expected a 2-class output [N, 2, H, W], the model gives {list(out.shape)}",
                            spec["model"])

    def _run(self, crops: np.ndarray) -> np.ndarray:
        """uint8 [n, h, w, 3] → raw model output [n, 2, h', w']."""
        x = to_model_input(crops, self._mean, self._std)  # [n, 3, h, w]
        self._input.reshape(list(x.shape))
        self._input.copy_from_cpu(x)
        self._predictor.run()
        return self._output.copy_to_cpu()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """crops: uint8 [N, h, w, 3] BGR at ``input_size`` → person probability float32 [N, h, w]."""
        check_crops(crops, self.input_size)
        if len(crops) == 0:
            return np.zeros((0, *self.input_size), np.float32)
        probs = person_probability(self._run(crops))  # [n, 2, h', w'] → [n, h', w']
        return resize_probs(probs, self.input_size)
