"""Where models run: device resolution and the ONNX Runtime providers that go with it."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'; 'cpu' and 'cuda' are taken as asked."""
    if name not in ("auto", "cpu", "cuda"):
        from allinone.errors import UserError
        raise UserError(f"unknown device {name!r} (expected auto, cpu or cuda)")
    if name != "auto":
        if name == "cuda":
            import torch
            if not torch.cuda.is_available():
                from allinone.errors import UserError
                raise UserError("--device cuda was asked for, but no CUDA device is visible to torch")
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


# Sequences or frames run through a model together on a GPU; one at a time on the CPU, where batching measured
# slower (README, "Evaluate a checkpoint").
GPU_BATCH = 8


def default_batch(asked: int, device: object) -> int:
    """``asked`` when the user set it (> 0), else GPU_BATCH on a CUDA device and 1 elsewhere."""
    return asked if asked and asked > 0 else (GPU_BATCH if str(device or "cpu").startswith("cuda") else 1)


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime providers for a resolved device. CUDA is asked for only when a GPU is there (asking for it
    on a CPU-only machine makes onnxruntime-gpu print a load error)."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" in available:
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()
            except (OSError, RuntimeError) as exc:  # CUDA libraries not loadable: fall back to CPU
                log.warning("onnxruntime could not preload CUDA libraries (%s); using CPU", exc)
                return ["CPUExecutionProvider"]
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session_options(threads: int = 0):
    """Session options shared by our ONNX Runtime backends (threads=0: ORT picks, one per physical core)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    # ORT's worker threads spin (busy-wait) for work during a run, which makes YOLOX-nano fast on 2 cores, and by
    # default keep spinning after it, which steals the cores from Paddle and torch, run next in the same process.
    # force_spinning_stop ends the spinning when a run returns. Measured on 2 cores, demo1/demo4/demo2 pipeline:
    # default 29-35 frames/s (PP-HumanSeg 6.4-8.9 ms/frame), spinning off 33-34 (YOLOX 12-14 → 15.5-16.4 ms),
    # stop after each run 34-41, median 37 (YOLOX 11.4-13.8 ms, PP-HumanSeg 5.1-5.7 ms).
    so.add_session_config_entry("session.force_spinning_stop", "1")
    return so
