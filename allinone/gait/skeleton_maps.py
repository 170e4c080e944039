"""SkeletonGait's skeleton maps: 2-D COCO-17 keypoints → a limb map and a joint map per frame, as OpenGait makes them.

OpenGait (datasets/pretreatment_heatmap.py with configs/skeletongait/pretreatment_heatmap.yaml) runs, per track:
  1. PadKeypoints: coordinates equal to exactly 0 count as missing and are filled by a 4-nearest-frame KNN
     (scikit-learn's KNNImputer, distance weights) over the track's frames;
  2. CenterAndScaleNormalizer: each frame is moved so that the mid-hip sits at (64, 64) of a 128x128 canvas and
     scaled so that its keypoints span 85 px (128 // 1.5) vertically. Position and size in the frame are thereby
     removed: the maps depend on the keypoints' shape only, so frame or crop pixels give the same maps;
  3. GeneratePoseTarget (sigma 8, confidence as peak): a Gaussian per joint and a Gaussian "tube" per limb of the
     COCO-17 skeleton, each frame's channels joined by their maximum;
  4. HeatmapToImage: the maximum through matplotlib's gray colormap, quantised to uint8 levels;
  5. HeatmapAlignment: rows from the first to the last non-zero one, a centred band of that height's width,
     resized to 64x64 (INTER_AREA) and truncated to uint8.
Limbs and joints go through 3-5 separately and are stacked limbs first, as OpenGait's GatherTransform does.

The arithmetic below keeps OpenGait's numpy dtypes (float32 keypoints, the float64 the limb distance becomes) so the
uint8 maps are OpenGait's exactly, not just close.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

JOINTS = 17
# GeneratePoseTarget's default skeleton: the COCO-17 limbs (nose-eyes-ears, arms, shoulders-hips, legs, hips)
LIMBS = ((0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (5, 7), (7, 9), (0, 6), (6, 8), (8, 10), (5, 11), (11, 13),
         (13, 15), (6, 12), (12, 14), (14, 16), (11, 12))
LEFT_HIP, RIGHT_HIP = 11, 12
SIGMA = 8.0  # heatmap_generator_args.sigma
CANVAS = 128  # norm_args.heatmap_image_height: the square the skeleton is drawn on
MAP_SIZE = 64  # align_args.final_img_size
EPS = 1e-3  # GeneratePoseTarget: joints (limbs) with a lower confidence (lower end confidence) are not drawn
KNN_NEIGHBOURS = 4  # PadKeypoints' KNNImputer


def skeleton_maps(xy: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """One track's keypoints → OpenGait's skeleton maps, uint8 [T, 2, 64, 64]: channel 0 limbs, channel 1 joints.

    xy: [T, 17, 2] keypoint x, y (any pixel frame: frame or crop; see the module note), COCO-17 order;
    confidence: [T, 17] in 0..1. Frames whose keypoints span no height (OpenGait divides by zero there and fails)
    get empty maps.
    """
    xy = np.asarray(xy)
    confidence = np.asarray(confidence)
    if xy.ndim != 3 or xy.shape[1:] != (JOINTS, 2) or len(xy) == 0:
        raise ValueError(f"keypoints must be [T, 17, 2] with T >= 1, got {xy.shape}")
    if confidence.shape != xy.shape[:2]:
        raise ValueError(f"confidence must be [T, 17] like the keypoints {xy.shape}, got {confidence.shape}")
    if not (np.isfinite(xy).all() and np.isfinite(confidence).all()):
        raise ValueError("keypoints and confidences must be finite")
    pose = normalised_keypoints(fill_missing(xy.astype(np.float32)))
    # OpenGait carries the confidences in the keypoints' array, so they share its dtype
    score = confidence.astype(pose.dtype)
    limbs = np.zeros((len(pose), MAP_SIZE, MAP_SIZE), np.uint8)
    joints = np.zeros_like(limbs)
    for t, (kps, conf) in enumerate(zip(pose, score)):
        if not np.isfinite(kps).all():
            continue
        limbs[t] = _aligned(_gray_levels(_limb_heatmap(kps, conf)))
        joints[t] = _aligned(_gray_levels(_joint_heatmap(kps, conf)))
    return np.stack([limbs, joints], axis=1)


def fill_missing(xy: np.ndarray) -> np.ndarray:
    """PadKeypoints: coordinates equal to 0 filled from the 4 nearest frames (KNNImputer, distance weights) → [T, 17, 2].

    As in OpenGait, a coordinate that is 0 in every frame makes the imputer drop that column, the reshape back
    fails, and the track is then used unfilled.
    """
    if not (xy == 0).any():
        return xy  # the imputer returns its input unchanged when nothing is missing
    from sklearn.impute import KNNImputer

    flat = xy.reshape(len(xy), -1)
    filled = KNNImputer(missing_values=0.0, n_neighbors=KNN_NEIGHBOURS, weights="distance").fit_transform(flat)
    if filled.shape != flat.shape:
        return xy
    return filled.reshape(xy.shape)


def normalised_keypoints(xy: np.ndarray) -> np.ndarray:
    """CenterAndScaleNormalizer: [T, 17, 2] → the same on the 128x128 canvas (mid-hip at 64, 64; 85 px tall).

    Frames with no vertical extent come back as NaN (no maps are drawn for them).
    """
    pose = xy - ((xy[:, LEFT_HIP] + xy[:, RIGHT_HIP]) / 2.0)[:, None, :]
    height = pose[:, :, 1].max(axis=-1) - pose[:, :, 1].min(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pose *= (CANVAS // 1.5) / height[:, None, None]
    pose += CANVAS // 2
    return pose


def _window(lo: float, hi: float, size: int) -> np.ndarray:
    """Pixel indices of [int(lo - 3 sigma), int(hi + 3 sigma)] inside 0..size-1, as float32 (OpenGait's box)."""
    return np.arange(max(int(lo - 3 * SIGMA), 0), min(int(hi + 3 * SIGMA) + 1, size), 1, np.float32)


def _paint(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, patch: np.ndarray) -> None:
    """canvas = max(canvas, patch) over the box xs x ys (canvas float32; patch of either float dtype)."""
    y0, x0 = int(ys[0]), int(xs[0])
    box = canvas[y0:y0 + len(ys), x0:x0 + len(xs)]
    box[...] = np.maximum(box, patch)


def _draw_joint(canvas: np.ndarray, centre: np.ndarray, peak: np.float32) -> None:
    """GeneratePoseTarget.generate_a_heatmap for one joint: peak * exp(-d^2 / 2 sigma^2) around ``centre``."""
    if peak < EPS:
        return
    xs = _window(centre[0], centre[0], canvas.shape[1])
    ys = _window(centre[1], centre[1], canvas.shape[0])
    if not (len(xs) and len(ys)):
        return
    ys = ys[:, None]
    patch = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / 2 / SIGMA ** 2)
    _paint(canvas, xs, ys[:, 0], patch * peak)


def _draw_limb(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, conf_a: np.float32, conf_b: np.float32) -> None:
    """GeneratePoseTarget.generate_a_limb_heatmap: a Gaussian of the distance to segment a-b, peak = min(conf)."""
    peak = min(conf_a, conf_b)
    if peak < EPS:
        return
    xs = _window(min(a[0], b[0]), max(a[0], b[0]), canvas.shape[1])
    ys = _window(min(a[1], b[1]), max(a[1], b[1]), canvas.shape[0])
    if not (len(xs) and len(ys)):
        return
    ys = ys[:, None]
    d2_a = (xs - a[0]) ** 2 + (ys - a[1]) ** 2
    d2_b = (xs - b[0]) ** 2 + (ys - b[1]) ** 2
    d2_ab = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    if d2_ab < 1:  # a point, drawn as joint a with a's own confidence
        _draw_joint(canvas, a, conf_a)
        return
    coeff = (d2_a - d2_b + d2_ab) / 2.0 / d2_ab  # position of the projection along a→b
    before, after = coeff <= 0, coeff >= 1
    inside = 1 - before - after  # int64, as OpenGait's: it turns the sum below into float64
    position = np.stack([xs + np.zeros_like(ys), ys + np.zeros_like(xs)], axis=-1)
    foot = a + np.stack([coeff, coeff], axis=-1) * (b - a)
    offset = position - foot
    d2_line = offset[..., 0] ** 2 + offset[..., 1] ** 2
    d2_seg = before * d2_a + after * d2_b + inside * d2_line
    _paint(canvas, xs, ys[:, 0], np.exp(-d2_seg / 2.0 / SIGMA ** 2) * peak)


def _joint_heatmap(kps: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """[17, 2] canvas keypoints → [128, 128] float32, the maximum over the 17 joint heatmaps."""
    out = np.zeros((JOINTS, CANVAS, CANVAS), np.float32)
    for j in range(JOINTS):
        _draw_joint(out[j], kps[j], conf[j])
    return out.max(axis=0)


def _limb_heatmap(kps: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """[17, 2] canvas keypoints → [128, 128] float32, the maximum over the 17 limb heatmaps."""
    out = np.zeros((len(LIMBS), CANVAS, CANVAS), np.float32)
    for i, (a, b) in enumerate(LIMBS):
        _draw_limb(out[i], kps[a], kps[b], conf[a], conf[b])
    return out.max(axis=0)


def _gray_levels(heat: np.ndarray) -> np.ndarray:
    """HeatmapToImage: float32 [H, W] in 0..1 → the uint8 red channel of matplotlib's gray colormap, as float64.

    The colormap picks entry floor(256 x value) (255 for 1.0) of a 256-entry table; OpenGait then truncates
    entry * 255 to uint8, which gives i - 1 instead of i for 24 entries (float rounding in matplotlib's table), so
    the table is read from matplotlib itself.
    """
    index = np.clip(np.floor(heat * np.float32(256)), 0, 255).astype(np.intp)
    return _gray_table()[index].astype(np.float64)


@lru_cache(maxsize=1)
def _gray_table() -> np.ndarray:
    """uint8 [256]: (gray(i) * 255).astype(uint8) for each entry i of matplotlib's gray colormap."""
    from matplotlib import colormaps

    return (colormaps["gray"](np.arange(256))[:, 0] * 255).astype(np.uint8)


def _aligned(levels: np.ndarray) -> np.ndarray:
    """HeatmapAlignment: the rows from the first to the last non-zero one and 2 * (height // 2) + 1 columns
    centred on the canvas, resized to 64x64 (INTER_AREA) → uint8 (truncated, as OpenGait's astype)."""
    image = levels / 255.0
    rows = image.sum(axis=1) != 0
    top = int(rows.argmax())
    bottom = int(rows.cumsum().argmax())
    height = bottom - top + 1
    mid = CANVAS // 2
    image = image[top:bottom + 1, mid - height // 2:mid + height // 2 + 1]
    image = cv2.resize(image, (MAP_SIZE, MAP_SIZE), interpolation=cv2.INTER_AREA)
    return (image * 255).astype(np.uint8)


def skeleton_input(maps: np.ndarray, sils: np.ndarray) -> np.ndarray:
    """SkeletonGaitPP.inputs_pretreament: skeleton maps uint8 [T, 2, 64, 64] beside the aligned silhouettes uint8
    [T, 64, 64] (or [T, 64, 44]) → uint8 [T, 3, 64, W] (limbs, joints, silhouette), the maps cut to the
    silhouettes' width as OpenGait does ((64 - 44) // 2 columns each side) when those are already cut."""
    if maps.ndim != 4 or maps.shape[1] != 2 or maps.dtype != np.uint8:
        raise ValueError(f"skeleton maps must be uint8 [T, 2, H, W], got {maps.dtype} {maps.shape}")
    if sils.ndim != 3 or sils.dtype != np.uint8 or len(sils) != len(maps) or sils.shape[1] != maps.shape[2]:
        raise ValueError(f"silhouettes must be uint8 [T, {maps.shape[2]}, W] for maps {maps.shape}, "
                         f"got {sils.dtype} {sils.shape}")
    h, w = sils.shape[1:]
    if h != w and maps.shape[2] == maps.shape[3]:
        cut = (h - w) // 2
        maps = maps[..., cut:-cut]
    return np.concatenate([maps, sils[:, None]], axis=1)
