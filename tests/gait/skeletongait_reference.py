"""How tests/gait/data/skeletongait_opengait.npz was made: OpenGait's own code on recorded keypoints.

The file holds
  xy, conf             float32 [40, 17, 2], [40, 17]: MoveNet SinglePose Lightning int8 (../shared/weights) on square
                       crops (1.2 x the larger side of YOLOX-nano's best box at score 0.5) of the first 40 frames of
                       ../shared/fixtures/videos/demo1.mp4 where a person was found; xy mapped back to frame pixels;
  maps                 uint8 [40, 2, 64, 64]: OpenGait's GenerateHeatmapTransform (datasets/pretreatment_heatmap.py,
                       configs/skeletongait/pretreatment_heatmap.yaml) on [xy, conf] as its pose pickle layout;
  holes_xy             xy with some coordinates set to 0 (OpenGait's "missing"; MISSING below);
  holes_frames, holes_maps  the frames whose OpenGait maps from holes_xy differ from ``maps``, and those maps;
  embed_1, embed_2     float32 [2, 128, 16]: OpenGait's SkeletonGaitPP (opengait/modeling/models/skeletongait++.py,
                       model_cfg Backbone C 1, blocks BLOCKS, class_num CLASSES, use_emb2 False / True) with the
                       weights of ``seeded_state`` through SkeletonGaitPP.inputs_pretreament (evaluator transform
                       BaseSilCuttingTransform) and forward, on the OpenGait maps of frames WINDOWS beside the
                       aligned silhouettes of ../shared/fixtures/silhouettes/plaza_gallery/001 (the same frames
                       indices; a different person, which does not matter for an equality test).

To remake it (OpenGait is not part of this repository): fetch ShiqiYu/OpenGait (made at 0efafd4), put its
``opengait/``, ``datasets/`` and ``configs/`` in a folder, pip install einops somewhere on PYTHONPATH and run
``python -m tests.gait.skeletongait_reference OPENGAIT_FOLDER KEYPOINTS.npz`` from the repository root, KEYPOINTS.npz
holding xy and conf as above. OpenGait's files are only read from that folder, never copied here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data" / "skeletongait_opengait.npz"
FRAMES = 40
BLOCKS = (1, 2, 1, 1)
BASE = 32  # OpenGait's 32 * C with C = 1
CLASSES = 7
WINDOWS = ((0, 8), (20, 21))  # [start, stop) frame ranges embedded: 8 frames, and a single frame
MISSING = ((3, 5, slice(None)), (10, 9, 0), (slice(11, 14), 15, slice(None)), (25, 16, 1))


def with_holes(xy: np.ndarray) -> np.ndarray:
    """xy with the coordinates of MISSING set to 0."""
    out = xy.copy()
    for index in MISSING:
        out[index] = 0
    return out


def seeded_state(model, seed: int = 30) -> dict:
    """A state dict for ``model`` drawn from numpy's PCG64 (stable across versions, unlike torch's initialisers):
    conv / FC weights N(0, 1 / fan_in), BatchNorm affine near (1, 0), running mean N(0, 0.2), var in [0.5, 1.5)."""
    import torch

    rng = np.random.default_rng(seed)
    out = {}
    for name, t in model.state_dict().items():
        shape = tuple(t.shape)
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(777)
            continue
        if name.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("running_mean"):
            v = rng.normal(0.0, 0.2, shape)
        elif len(shape) == 1:  # BatchNorm affine
            v = rng.normal(1.0 if name.endswith("weight") else 0.0, 0.1, shape)
        else:
            fan_in = shape[1] * int(np.prod(shape[2:])) if not name.endswith("fc_bin") else shape[1]
            v = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        out[name] = torch.from_numpy(v.astype(np.float32))
    return out


def plaza_sils(shared: Path) -> np.ndarray:
    """Aligned uint8 [T, 64, 64] silhouettes of plaza_gallery/001 (the project's OpenGait-equal alignment)."""
    import cv2

    from allinone.stages.align import align_sequence

    files = sorted((shared / "fixtures" / "silhouettes" / "plaza_gallery" / "001").glob("*.png"))
    return align_sequence(np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]))[0]


def _opengait(folder: Path):
    """OpenGait's heatmap module and SkeletonGaitPP class, imported from ``folder`` on the CPU."""
    import importlib.util
    import types

    sys.path[:0] = [str(folder / "opengait")]
    spec = importlib.util.spec_from_file_location("og_heatmap", folder / "datasets" / "pretreatment_heatmap.py")
    heatmap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heatmap)
    import torch

    board = types.ModuleType("torch.utils.tensorboard")  # OpenGait's message manager imports it; it logs only
    board.SummaryWriter = object
    sys.modules.setdefault("torch.utils.tensorboard", board)
    import utils.common

    utils.common.ts2var = lambda x, **kw: torch.autograd.Variable(x, **kw)  # OpenGait moves inputs to CUDA
    import modeling.base_model as base

    base.np2var = lambda x, **kw: torch.from_numpy(x)
    base.list2var = lambda x, **kw: torch.from_numpy(np.array(x))
    models = types.ModuleType("modeling.models")  # its __init__ imports every model; only one is needed
    models.__path__ = [str(folder / "opengait" / "modeling" / "models")]
    sys.modules["modeling.models"] = models
    spec = importlib.util.spec_from_file_location("modeling.models.skeletongaitpp",
                                                  folder / "opengait" / "modeling" / "models" / "skeletongait++.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return heatmap, module.SkeletonGaitPP, base


def main(folder: Path, keypoints: Path) -> None:
    import torch
    import yaml

    from allinone.gait.skeletongait import SkeletonGaitPP as Ours

    heatmap, og_class, _ = _opengait(folder)
    from data.transform import get_transform  # OpenGait's, importable once _opengait has put it on sys.path

    cfg = yaml.safe_load((folder / "configs" / "skeletongait" / "pretreatment_heatmap.yaml").read_text())
    cfg = heatmap.replace_variables(cfg, cfg)
    kp = np.load(keypoints)
    xy, conf = kp["xy"][:FRAMES].astype(np.float32), kp["conf"][:FRAMES].astype(np.float32)

    def og_maps(points):
        return heatmap.GenerateHeatmapTransform(**cfg)(np.concatenate([points, conf[..., None]], -1))

    maps, holes_xy = og_maps(xy), with_holes(xy)
    holes_maps = og_maps(holes_xy)
    state = seeded_state(Ours(CLASSES, BLOCKS, BASE))
    sils = plaza_sils(Path(__file__).resolve().parents[2].parent / "shared")
    out = {}
    for emb2 in (False, True):
        model = og_class.__new__(og_class)
        torch.nn.Module.__init__(model)
        model.build_network({"Backbone": {"in_channels": 3, "blocks": list(BLOCKS), "C": BASE // 32},
                             "SeparateBNNecks": {"class_num": CLASSES}, "use_emb2": emb2})
        model.load_state_dict(state, strict=True)
        model.eval()
        model.evaluator_trfs = get_transform([{"type": "BaseSilCuttingTransform"}])
        rows = []
        for a, b in WINDOWS:
            batch = [[[maps[a:b]], [sils[a:b]]], [0], ["nm"], ["000"], np.array([[b - a]])]
            with torch.no_grad():
                rows.append(model(model.inputs_pretreament(batch))["inference_feat"]["embeddings"][0].numpy())
        out["embed_2" if emb2 else "embed_1"] = np.stack(rows)
    DATA.parent.mkdir(exist_ok=True)
    changed = np.flatnonzero((holes_maps != maps).any(axis=(1, 2, 3)))  # the other frames' maps equal ``maps``
    np.savez_compressed(DATA, xy=xy, conf=conf, maps=maps, holes_xy=holes_xy, holes_frames=changed,
                        holes_maps=holes_maps[changed], **out)
    print(f"wrote {DATA} ({DATA.stat().st_size} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
