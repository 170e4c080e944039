"""The gait stage for keypoint models (GaitGraph): a track's COCO-17 keypoints → one L2-normalised embedding.

Coordinates: GaitGraph trained on absolute pixel coordinates of 320x240 CASIA-B frames (HRNet keypoints), and its
first layer is a BatchNorm over (x, y, confidence) whose running mean and variance are those of its training data.
Our people stand anywhere in frames of any size, so each window's x and y are moved and scaled (one factor for
both, keeping the body's proportions) so that their mean and spread equal that BatchNorm's running statistics for
y, and x's mean equals its x mean: the network sees a person of CASIA-B's size where CASIA-B people stand.
Confidence is passed as it is.

Windows: GaitGraph evaluates the centre 60 frames of a sequence. A track is cut into ``window``-frame windows every
``stride`` frames (the last one ending at the track's end); the track's embedding is the mean of its windows'
embeddings, L2-normalised again (so GaitGraph's euclidean distance on unit vectors still applies). A track shorter
than the window is one window of its own length.
"""
from __future__ import annotations

import logging

import numpy as np

from allinone.config import GaitConfig
from allinone.gait.registry import ArchSpec

log = logging.getLogger(__name__)


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start frames of the windows over ``n`` frames: every ``stride`` from 0, plus one ending at the last frame."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, max(1, stride)))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def to_model_coordinates(seq: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(T, 17, 3) keypoints (x, y in any pixels, confidence) → the same in the scale of the model's training:
    y's mean and standard deviation over the window become ``mean[1]``, ``std[1]``, x's mean ``mean[0]``, x scaled
    by the same factor as y. ``mean``, ``std``: the input BatchNorm's running mean and sqrt(running_var)."""
    seq = np.asarray(seq, np.float64)
    out = seq.copy()
    spread = float(seq[..., 1].std())
    s = float(std[1]) / spread if spread > 1e-6 else 1.0
    out[..., 0] = (seq[..., 0] - seq[..., 0].mean()) * s + float(mean[0])
    out[..., 1] = (seq[..., 1] - seq[..., 1].mean()) * s + float(mean[1])
    return out.astype(np.float32)


class KeypointEmbedder:
    """Keypoint sequences float32 [T, 17, 3] (x, y frame pixels, confidence) → embeddings float32 [c, 1]."""

    input = "keypoints"

    def __init__(self, config: GaitConfig, device: str, model, spec: ArchSpec) -> None:
        import torch

        self.config, self.device, self.model, self.spec = config, device, model, spec
        self.arch, self.metric = spec.name, spec.metric
        self.embedding = "embed_1"
        self.embedding_shape: tuple[int, int] = model.embedding_shape
        bn = model.input_branches[0].bn
        with torch.no_grad():
            self.mean = bn.running_mean.double().cpu().numpy()
            self.std = np.sqrt(bn.running_var.double().cpu().numpy() + bn.eps)

    def windows(self, seq: np.ndarray) -> np.ndarray:
        """(T, 17, 3) → (W, L, 17, 3) windows in the model's coordinates (L = min(T, window))."""
        sk = self.config.skeleton
        length = min(len(seq), sk.window)
        return np.stack([to_model_coordinates(seq[s:s + length], self.mean, self.std)
                         for s in window_starts(len(seq), sk.window, sk.stride)])

    def __call__(self, sequences: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:  # noqa: ARG002
        """One forward per track over all its windows (they share a length)."""
        import torch

        out = []
        with torch.inference_mode():
            for seq in sequences:
                seq = np.asarray(seq, np.float32)
                if seq.ndim != 3 or seq.shape[1:] != (17, 3) or not len(seq):
                    raise ValueError(f"keypoint sequences must be non-empty [T, 17, 3], got {seq.shape}")
                x = torch.from_numpy(self.windows(seq)).to(self.device)
                emb = self.model.embed(x)[:, :, 0].double().cpu().numpy()  # [W, c], unit rows
                mean = emb.mean(axis=0)
                mean /= max(float(np.linalg.norm(mean)), 1e-12)
                out.append(mean.astype(np.float32)[:, None])
        return out
