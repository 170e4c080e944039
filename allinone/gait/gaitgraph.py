"""GaitGraph (Teepe et al., ICIP 2021): ResGCN-N39-R8 over COCO-17 keypoint sequences, as tteepe/GaitGraph builds it
(``src/models/ResGCNv1``, ``create('resgcn-n39-r8', A=Graph('coco'), num_class=128, num_input=1, num_channel=3)``).

Input (N, I, 3, T, 17): (x, y, confidence) per joint and frame; output (N, num_class) L2-normalised. The state_dict
keys are GaitGraph's, so its released checkpoint loads unchanged. Unlike GaitGraph's ``x.squeeze()``, a batch of one
works (its squeeze drops the batch axis and the L2 normalisation then fails).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles): the skeleton's bones, and the joint
# each joint hangs from (GaitGraph's datasets/graph.py, 'coco').
COCO_BONES = ((0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11),
              (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16))
N_JOINTS = 17
MAX_HOP = 3  # GaitGraph's Graph default: adjacency split by hop distance 0..3
GRAPH_KERNEL = 3  # its modules' kernel_size [9, 2]: max graph distance 2, so only hops 0..2 of A are convolved


def coco_adjacency(max_hop: int = MAX_HOP) -> np.ndarray:
    """(max_hop + 1, 17, 17): for each hop distance d, the column-normalised adjacency (A D^-1 over all joints
    within max_hop) restricted to joint pairs exactly d bones apart (ST-GCN's distance partitioning)."""
    link = np.eye(N_JOINTS)
    for i, j in COCO_BONES:
        link[i, j] = link[j, i] = 1
    hop = np.full((N_JOINTS, N_JOINTS), np.inf)
    reach = [np.linalg.matrix_power(link, d) > 0 for d in range(max_hop + 1)]
    for d in range(max_hop, -1, -1):
        hop[reach[d]] = d
    near = (hop <= max_hop).astype(np.float64)
    norm = near / near.sum(axis=0, keepdims=True)
    return np.stack([np.where(hop == d, norm, 0.0) for d in range(max_hop + 1)])


def _bn_conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, (stride, 1)), nn.BatchNorm2d(cout))


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> int:  # noqa: ARG002 - a residual that adds nothing
        return 0


class _Same(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class GraphConv(nn.Module):
    """Spatial graph convolution: one 1x1 conv per hop class, summed over the graph (GaitGraph's SpatialGraphConv)."""

    def __init__(self, cin: int, cout: int, hops: int) -> None:
        super().__init__()
        self.hops = hops
        self.gcn = nn.Conv2d(cin, cout * hops, 1)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = self.gcn(x)
        n, kc, t, v = x.shape
        x = x.view(n, self.hops, kc // self.hops, t, v)
        return torch.einsum("nkctv,kvw->nctw", x, a[:self.hops]).contiguous()


class SpatialBlock(nn.Module):
    """Basic (graph conv, BN) or bottleneck (1x1 down by ``reduction``, graph conv, 1x1 up) spatial block."""

    def __init__(self, cin: int, cout: int, hops: int, bottleneck: bool, residual: bool, reduction: int) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        if not residual:
            self.residual: nn.Module = _Zero()
        else:
            self.residual = _Same() if cin == cout else _bn_conv(cin, cout)
        mid = cout // reduction if bottleneck else cout
        if bottleneck:
            self.conv_down, self.bn_down = nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid)
            self.conv_up, self.bn_up = nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout)
        self.conv = GraphConv(mid if bottleneck else cin, mid, hops)
        self.bn = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        res = self.residual(x)
        if self.bottleneck:
            x = F.relu(self.bn_down(self.conv_down(x)))
            x = F.relu(self.bn(self.conv(x, a)))
            return F.relu(self.bn_up(self.conv_up(x)) + res)
        return F.relu(self.bn(self.conv(x, a)) + res)


class TemporalBlock(nn.Module):
    """Basic or bottleneck temporal convolution (window 9 frames, stride 1 or 2), plus the module's residual."""

    def __init__(self, ch: int, stride: int, bottleneck: bool, residual: bool, reduction: int,
                 window: int = 9) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        if not residual:
            self.residual: nn.Module = _Zero()
        else:
            self.residual = _Same() if stride == 1 else _bn_conv(ch, ch, stride)
        mid = ch // reduction if bottleneck else ch
        if bottleneck:
            self.conv_down, self.bn_down = nn.Conv2d(ch, mid, 1), nn.BatchNorm2d(mid)
            self.conv_up, self.bn_up = nn.Conv2d(mid, ch, 1), nn.BatchNorm2d(ch)
        self.conv = nn.Conv2d(mid, mid, (window, 1), (stride, 1), ((window - 1) // 2, 0))
        self.bn = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor, res_module) -> torch.Tensor:
        res = self.residual(x)
        if self.bottleneck:
            x = F.relu(self.bn_down(self.conv_down(x)))
            x = F.relu(self.bn(self.conv(x)))
            return F.relu(self.bn_up(self.conv_up(x)) + res + res_module)
        return F.relu(self.bn(self.conv(x)) + res + res_module)


class GCNModule(nn.Module):
    """Spatial then temporal block with a learnt edge weight per adjacency entry (GaitGraph's ResGCN_Module).

    The module-level residual exists only for basic non-initial modules; bottlenecks carry theirs in the blocks."""

    def __init__(self, cin: int, cout: int, block: str, hops: int, reduction: int, initial: bool = False,
                 stride: int = 1) -> None:
        super().__init__()
        bottleneck = block == "Bottleneck"
        module_res = not initial and not bottleneck
        block_res = not initial and bottleneck
        if not module_res:
            self.residual: nn.Module = _Zero()
        else:
            self.residual = _Same() if stride == 1 and cin == cout else _bn_conv(cin, cout, stride)
        self.scn = SpatialBlock(cin, cout, GRAPH_KERNEL, bottleneck, block_res, reduction)
        self.tcn = TemporalBlock(cout, stride, bottleneck, block_res, reduction)
        self.edge = nn.Parameter(torch.ones(hops, N_JOINTS, N_JOINTS))

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.tcn(self.scn(x, a * self.edge), self.residual(x))


class InputBranch(nn.Module):
    def __init__(self, structure: tuple[int, ...], block: str, channels: int, a: torch.Tensor, reduction: int):
        super().__init__()
        self.register_buffer("A", a.clone())
        hops = len(a)
        layers = [GCNModule(channels, 64, "Basic", hops, reduction, initial=True)]
        layers += [GCNModule(64, 64, "Basic", hops, reduction, initial=True) for _ in range(structure[0] - 1)]
        layers += [GCNModule(64, 64, block, hops, reduction) for _ in range(structure[1] - 1)]
        layers += [GCNModule(64, 32, block, hops, reduction)]
        self.bn = nn.BatchNorm2d(channels)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(x)
        for layer in self.layers:
            x = layer(x, self.A)
        return x


class GaitGraph(nn.Module):
    """ResGCN (GaitGraph's ResGCNv1 without attention). Defaults: ResGCN-N39-R8, GaitGraph's released model."""

    def __init__(self, num_class: int = 128, num_input: int = 1, num_channel: int = 3,
                 structure: tuple[int, int, int, int] = (1, 2, 2, 2), block: str = "Bottleneck",
                 reduction: int = 8) -> None:
        super().__init__()
        a = torch.tensor(coco_adjacency(), dtype=torch.float32)
        self.register_buffer("A", a)
        self.num_input, self.num_channel, self.num_class = num_input, num_channel, num_class
        self.input_branches = nn.ModuleList([InputBranch(structure, block, num_channel, a, reduction)
                                             for _ in range(num_input)])
        hops = len(a)
        main = [GCNModule(32 * num_input, 128, block, hops, reduction, stride=2)]
        main += [GCNModule(128, 128, block, hops, reduction) for _ in range(structure[2] - 1)]
        main += [GCNModule(128, 256, block, hops, reduction, stride=2)]
        main += [GCNModule(256, 256, block, hops, reduction) for _ in range(structure[3] - 1)]
        self.main_stream = nn.ModuleList(main)
        self.fcn = nn.Linear(256, num_class)

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return (self.num_class, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, I, C, T, V) → (N, num_class), L2-normalised."""
        x = torch.cat([branch(x[:, i]) for i, branch in enumerate(self.input_branches)], dim=1)
        for layer in self.main_stream:
            x = layer(x, self.A)
        x = self.fcn(x.mean(dim=(2, 3)))
        return F.normalize(x, dim=1, p=2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, 17, 3) keypoint windows, already in the model's coordinates → (N, num_class, 1)."""
        return self.forward(x.permute(0, 3, 1, 2).unsqueeze(1))[:, :, None]

    @staticmethod
    def kwargs_from_state(state) -> dict:
        """Constructor arguments from a GaitGraph state_dict's shapes (ValueError when they are not GaitGraph's)."""
        try:
            num_input = len({k.split(".")[1] for k in state if k.startswith("input_branches.")})
            num_channel = int(state["input_branches.0.bn.weight"].shape[0])
            num_class = int(state["fcn.weight"].shape[0])
            branch = {int(k.split(".")[3]) for k in state if k.startswith("input_branches.0.layers.")}
            main = {int(k.split(".")[1]) for k in state if k.startswith("main_stream.")}
            bottleneck = "main_stream.0.scn.conv_down.weight" in state
            reduction = 1
            if bottleneck:
                reduction = int(state["main_stream.0.scn.conv_up.weight"].shape[0]
                                // state["main_stream.0.scn.conv_up.weight"].shape[1])
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"unreadable GaitGraph shapes ({exc})") from exc
        down = [i for i in sorted(main) if f"main_stream.{i}.tcn.residual.0.weight" in state
                or f"main_stream.{i}.residual.0.weight" in state]
        if len(branch) < 2 or len(down) < 2:
            raise ValueError("not a ResGCN layer layout")
        initial = 1  # every ResGCN structure of GaitGraph (b15..n75) starts its branch with one initial module
        n2 = down[1] - down[0]
        structure = (initial, len(branch) - initial, n2, len(main) - n2)
        return {"num_class": num_class, "num_input": num_input, "num_channel": num_channel, "structure": structure,
                "block": "Bottleneck" if bottleneck else "Basic", "reduction": reduction}
