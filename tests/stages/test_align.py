from __future__ import annotations

import cv2
import numpy as np
import pytest

from allinone.stages.align import align_sequence, align_silhouette
from allinone.gait.inputs import to_model_input


def reference_align(img: np.ndarray, img_size: int = 64):
    """Straight, loop-based reading of OpenGait's imgs2pickle (non-GREW branch) for one image."""
    if img.sum() <= 10000:
        return None
    y_sum = img.sum(axis=1)
    y_top = None
    for y in range(img.shape[0]):
        if y_sum[y] != 0:
            y_top = y
            break
    y_btm = None
    for y in range(img.shape[0] - 1, -1, -1):
        if y_sum[y] != 0:
            y_btm = y
            break
    img = img[y_top: y_btm + 1, :]
    ratio = img.shape[1] / img.shape[0]
    img = cv2.resize(img, (int(img_size * ratio), img_size), interpolation=cv2.INTER_CUBIC)
    x_csum = img.sum(axis=0).cumsum()
    x_center = None
    for idx, csum in enumerate(x_csum):
        if csum > img.sum() / 2:
            x_center = idx
            break
    if not x_center:
        return None
    half_width = img_size // 2
    left = x_center - half_width
    right = x_center + half_width
    if left <= 0 or right >= img.shape[1]:
        left += half_width
        right += half_width
        pad = np.zeros((img.shape[0], half_width))
        img = np.concatenate([pad, img, pad], axis=1)
    return img[:, left:right].astype("uint8")


FOLDERS = [f"{s}/{t:03d}" for s in ("plaza_gallery", "plaza_probe1") for t in range(1, 5)]


@pytest.fixture(scope="module")
def real_masks(shared):
    root = shared / "fixtures" / "silhouettes"
    out = {}
    for folder in FOLDERS:
        files = sorted((root / folder).glob("*.png"))
        assert files, f"no masks in {folder}"
        out[folder] = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
    return out


def test_all_eight_folders_present(real_masks):
    assert len(real_masks) == 8
    assert sum(len(m) for m in real_masks.values()) == 4 * 59 + 4 * 56


@pytest.mark.parametrize("folder", FOLDERS)
def test_matches_reference_on_real_masks(real_masks, folder):
    masks = real_masks[folder]
    aligned, kept = align_sequence(masks)
    expected = [(i, reference_align(m)) for i, m in enumerate(masks)]
    expected = [(i, e) for i, e in expected if e is not None]
    assert kept.tolist() == [i for i, _ in expected]
    assert aligned.dtype == np.uint8 and aligned.shape == (len(expected), 64, 64)
    for got, (_, want) in zip(aligned, expected):
        np.testing.assert_array_equal(got, want)
    # real walking people: every frame is kept and has foreground
    assert len(kept) == len(masks)
    assert (aligned.reshape(len(aligned), -1).max(axis=1) == 255).all()


def test_empty_and_faint_masks_dropped():
    assert align_silhouette(np.zeros((128, 96), np.uint8)) is None
    faint = np.zeros((128, 96), np.uint8)
    faint[40:50, 40:50] = 100  # sum exactly 10000: dropped (<=)
    assert reference_align(faint) is None
    assert align_silhouette(faint) is None
    faint[40, 40] = 101  # one over the threshold: kept
    ref = reference_align(faint)
    assert ref is not None
    np.testing.assert_array_equal(align_silhouette(faint), ref)


@pytest.mark.parametrize("side", ["left", "right"])
def test_border_person_gets_zero_padding(side):
    mask = np.zeros((200, 200), np.uint8)
    mask[20:180, 0:30] = 255  # a tall body touching the left border
    if side == "right":
        mask = mask[:, ::-1].copy()
    got = align_silhouette(mask)
    want = reference_align(mask)
    assert got is not None and got.shape == (64, 64) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    # The person is cut at the image border, so the window reaches beyond it and those columns are zero.
    if side == "left":
        assert (got[:, :20] == 0).all() and got[:, 32:40].max() == 255
    else:
        assert (got[:, -20:] == 0).all() and got[:, 24:32].max() == 255


def test_center_zero_is_dropped():
    # A single full-height line in column 0 of a wide image: after the resize all mass is in column 0, so the
    # x-center is 0, which OpenGait's `if not x_center` treats as no center.
    mask = np.zeros((128, 200), np.uint8)
    mask[:, 0] = 255
    resized = cv2.resize(mask, (100, 64), interpolation=cv2.INTER_CUBIC)
    assert resized[:, 1:].sum() == 0 and resized[:, 0].sum() > 0  # the premise of the case
    assert reference_align(mask) is None
    assert align_silhouette(mask) is None
    # Moving the line one column in makes the center 1: kept.
    mask2 = np.zeros((128, 200), np.uint8)
    mask2[:, 2:4] = 255
    ref = reference_align(mask2)
    assert ref is not None
    np.testing.assert_array_equal(align_silhouette(mask2), ref)


def test_sequence_keeps_indices_of_valid_frames(real_masks):
    masks = real_masks["plaza_gallery/001"][:5].copy()
    masks[1] = 0
    masks[3] = 0
    aligned, kept = align_sequence(masks)
    assert kept.tolist() == [0, 2, 4]
    np.testing.assert_array_equal(aligned[1], reference_align(masks[2]))
    empty, kept0 = align_sequence(np.zeros((3, 50, 50), np.uint8))
    assert empty.shape == (0, 64, 64) and empty.dtype == np.uint8 and kept0.shape == (0,)


def test_rejects_wrong_dtype():
    with pytest.raises(ValueError):
        align_silhouette(np.ones((64, 64), np.float32))
    with pytest.raises(ValueError):
        align_sequence(np.ones((64, 64), np.uint8))


def test_to_model_input(real_masks):
    aligned, _ = align_sequence(real_masks["plaza_probe1/002"])
    x = to_model_input(aligned)
    assert x.dtype == np.float32 and x.shape == (len(aligned), 64, 44)
    assert x.min() == 0.0 and x.max() == 1.0
    # columns 10..53 of the window, divided by 255
    np.testing.assert_array_equal(x[0], aligned[0][:, 10:54].astype(np.float32) / np.float32(255))
