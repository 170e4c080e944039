"""GaitGL (Lin et al., ICCV 2021) as OpenGait builds it (opengait/modeling/models/gaitgl.py).

OpenGait picks one of two layouts by dataset name; here the checkpoint's keys decide:
  * CASIA-B (configs/gaitgl/gaitgl.yaml, channels [32, 64, 128]): one GLConv per stage, local convs on 8 strips
    (halving 3): ``GLConvA0.global_conv3d.conv3d.weight`` ...
  * GREW / OUMVLP (gaitgl_GREW.yaml, gaitgl_OUMVLP.yaml, channels [32, 64, 128, 256]): two GLConvs per stage, local
    convs on 2 strips (halving 1): ``GLConvA0.0.global_conv3d.conv3d.weight`` ...
and one of two heads: BatchNorm1d + FC classifier (``Bn.*``, ``Head1.fc_bin``; all configs but one) or
SeparateBNNecks (``BNNecks.*``; gaitgl_GREW_BNNeck.yaml).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from allinone.gait.blocks import Conv3dUnit, GeMHPP, fc_embedding_shape, in_strips, shape_of
from allinone.gait.gaitbase import SeparateBNNecks, SeparateFCs

PARTS = 64  # GeMHPP bins: one per row of the 64-row map after the last GLConv


def _act() -> nn.Module:
    return nn.LeakyReLU(inplace=True)


class GLConv(nn.Module):
    """Global + local 3x3x3 convs: the local one sees ``strips`` horizontal bands separately.

    [n, c, s, h, w] → [n, c', s, h, w], or [n, c', s, 2h, w] with ``fm_sign`` (global and local maps stacked along
    the height instead of added).
    """

    def __init__(self, c_in: int, c_out: int, strips: int, fm_sign: bool) -> None:
        super().__init__()
        self.strips = strips
        self.fm_sign = fm_sign
        self.global_conv3d = Conv3dUnit(c_in, c_out)
        self.local_conv3d = Conv3dUnit(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.global_conv3d(x)
        loc = in_strips(self.local_conv3d, x, self.strips, dim=3)
        if self.fm_sign:
            return F.leaky_relu(torch.cat([g, loc], dim=3))
        return F.leaky_relu(g) + F.leaky_relu(loc)


class GaitGL(nn.Module):
    """3-D CNN: conv3d stem → local temporal aggregation (frames / 3) → GLConv stages → temporal max → GeM over
    64 rows → per-part FC → BN head.

    sils [n, s, 64, 44] → embed [n, c, 64] with c = channels[-1] (128 CASIA-B, 256 GREW/OUMVLP): OpenGait's
    ``inference_feat['embeddings']``: ``bnft``, the BatchNorm1d output of the Head0 features, with the BN head; the
    Head0 features themselves (``embed = gait``) with the BNNeck head (gaitgl_GREW_BNNeck), whose normalised BNNeck
    output is used only for training. Never the logits.
    Shapes (GREW): stem [n, 32, s, 64, 44] → LTA [n, 32, s//3, 64, 44] → A0 [n, 64, ., 64, 44] → pool
    [n, 64, ., 32, 22] → A1 [n, 128, ., 32, 22] → B2 [n, 256, ., 64, 22] → max [n, 256, 64, 22]
    → GeM [n, 256, 64].
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), class_num: int = 20000,
                 head: str = "bn") -> None:
        super().__init__()
        if len(channels) not in (3, 4):
            raise ValueError("GaitGL channels: 3 sizes (CASIA-B layout) or 4 (GREW/OUMVLP layout)")
        if head not in ("bn", "bnneck"):
            raise ValueError(f"GaitGL head must be 'bn' or 'bnneck', got {head!r}")
        c = list(channels)
        if len(c) == 4:  # GREW / OUMVLP
            self.conv3d = nn.Sequential(Conv3dUnit(1, c[0]), _act(), Conv3dUnit(c[0], c[0]), _act())
            self.LTA = nn.Sequential(Conv3dUnit(c[0], c[0], (3, 1, 1), (3, 1, 1), (0, 0, 0)), _act())
            self.GLConvA0 = nn.Sequential(GLConv(c[0], c[1], 2, False), GLConv(c[1], c[1], 2, False))
            self.MaxPool0 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.GLConvA1 = nn.Sequential(GLConv(c[1], c[2], 2, False), GLConv(c[2], c[2], 2, False))
            self.GLConvB2 = nn.Sequential(GLConv(c[2], c[3], 2, False), GLConv(c[3], c[3], 2, True))
        else:  # CASIA-B
            self.conv3d = nn.Sequential(Conv3dUnit(1, c[0]), _act())
            self.LTA = nn.Sequential(Conv3dUnit(c[0], c[0], (3, 1, 1), (3, 1, 1), (0, 0, 0)), _act())
            self.GLConvA0 = GLConv(c[0], c[1], 8, False)
            self.MaxPool0 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.GLConvA1 = GLConv(c[1], c[2], 8, False)
            self.GLConvB2 = GLConv(c[2], c[2], 8, True)
        self.HPP = GeMHPP(bins=(PARTS,))
        self.Head0 = SeparateFCs(PARTS, c[-1], c[-1])
        self.head = head
        if head == "bnneck":
            self.BNNecks = SeparateBNNecks(PARTS, c[-1], class_num)
        else:
            self.Bn = nn.BatchNorm1d(c[-1])
            self.Head1 = SeparateFCs(PARTS, c[-1], class_num)

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return fc_embedding_shape(self.Head0.fc_bin)

    @staticmethod
    def kwargs_from_state(state: Mapping[str, torch.Tensor]) -> dict:
        """Constructor arguments from an OpenGait GaitGL state_dict (layout from the GLConv key nesting, widths
        from the conv shapes, head and class_num from Bn/Head1 or BNNecks)."""
        c0 = shape_of(state, "conv3d.0.conv3d.weight", 5)[0]
        nested = "GLConvA0.0.global_conv3d.conv3d.weight" in state
        sub = ".0" if nested else ""
        c1 = shape_of(state, f"GLConvA0{sub}.global_conv3d.conv3d.weight", 5)[0]
        c2 = shape_of(state, f"GLConvA1{sub}.global_conv3d.conv3d.weight", 5)[0]
        channels: tuple[int, ...] = (c0, c1, c2)
        if nested:
            channels += (shape_of(state, "GLConvB2.0.global_conv3d.conv3d.weight", 5)[0],)
        parts = shape_of(state, "Head0.fc_bin", 3)[0]
        if parts != PARTS:
            raise ValueError(f"Head0.fc_bin has {parts} parts; OpenGait's GaitGL has {PARTS}")
        if "BNNecks.fc_bin" in state:
            return {"channels": channels, "class_num": shape_of(state, "BNNecks.fc_bin", 3)[2], "head": "bnneck"}
        return {"channels": channels, "class_num": shape_of(state, "Head1.fc_bin", 3)[2], "head": "bn"}

    def features(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] → Head0 features [n, c, 64] (before the BN head).

        Sequences shorter than 3 frames are tiled as OpenGait's forward does (1 frame x3, 2 frames x2) so the
        stride-3 temporal aggregation has a full window; frames past the last multiple of 3 are left out by it.
        """
        if sils.dim() != 4:
            raise ValueError(f"silhouettes must be [n, s, h, w], got {tuple(sils.shape)}")
        x = sils.unsqueeze(1)  # [n, 1, s, h, w]
        s = x.shape[2]
        # OpenGait's x.repeat for s < 3, without a branch: the first s * ceil(3 / s) frames of the sequence tiled
        # (3, 4, then s itself), so an ONNX trace keeps the behaviour for every length.
        x = torch.cat([x, x, x], dim=2)[:, :, :s * ((s + 2) // s)]
        x = self.LTA(self.conv3d(x))
        x = self.GLConvB2(self.GLConvA1(self.MaxPool0(self.GLConvA0(x))))
        return self.Head0(self.HPP(x.amax(2)))

    def embed(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] → OpenGait's inference embedding [n, c, 64]: the BN head's output, or the Head0
        features with a BNNeck head (see class doc)."""
        gait = self.features(sils)
        if self.head == "bnneck":
            return gait
        return self.Bn(gait)

    def forward(self, sils: torch.Tensor) -> dict[str, torch.Tensor]:
        """sils [n, s, h, w] → {'embed': [n, c, 64], 'logits': [n, class_num, 64]}."""
        gait = self.features(sils)
        if self.head == "bnneck":
            logits = self.BNNecks(gait)[1]
            embed = gait
        else:
            embed = self.Bn(gait)
            logits = self.Head1(embed)
        return {"embed": embed, "logits": logits}
