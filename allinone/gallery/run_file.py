"""A run with --gallery-db: the gallery file opened read-only, searched (all of it, or through its index), and the
gallery features the run used kept in the run folder, so ``rematch`` decides from them, not from the file as it
is later.

For a gallery file above SearchConfig.exact_limit tracks the threshold is fixed before the search (the search
finds every identity within it): a user's threshold as it is, or the FPIR rule (decide/threshold.py) over the run's
own tracks seen together and the calibration file, with N = every track of the file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from allinone.decide.threshold import Threshold, resolve_threshold
from allinone.errors import UserError
from allinone.gallery.store import GALLERY_VIDEO, GalleryStore, ModelInfo
from allinone.io.input_models import InputModels
from allinone.records import Embedding, Identity

log = logging.getLogger(__name__)

FEATURES = "gallery_features.npz"


def open_store(path: Path) -> GalleryStore:
    return GalleryStore(path, readonly=True)


def check_store(store: GalleryStore, gait_sha: str, config, embedder, models: InputModels) -> None:
    """The file's features must come from this run's checkpoint, metric and embedding (the embedder's, resolved),
    made from its segmenter's silhouettes (and its pose model's keypoints): ``models``."""
    store.check_model(ModelInfo(gait_sha, config.gait.model, embedder.arch, config.match.metric,
                                getattr(embedder, "embedding", "embed_1"),
                                getattr(embedder, "source_sha256", "") or "", models))


def _threshold(store: GalleryStore, results, config, calibrated) -> Threshold:
    """The threshold of a run against a gallery file too large to load, fixed before the search: its evidence is
    the run's own tracks seen together and the calibration file (no pairs of gallery identities: those would need
    the whole file); N is every track of the file."""
    m = config.match
    every = [e for r in results for e in (r.embeddings[t] for t in sorted(r.embeddings))]
    together = [row for r in results for row in r.together.rows(r.info.name)]
    return resolve_threshold(m.threshold, m.metric, every, [], together, target_fpir=m.target_fpir,
                             min_overlap=m.auto_min_overlap, min_frames=m.min_frames, calibration=calibrated,
                             gallery_size=store.count_tracks())


def stored_gallery(store: GalleryStore, results, config, calibrated):
    """(identities to compare with, run.json ``search``, the threshold fixed for the search or None when the
    whole file is loaded and the run's usual rule applies)."""
    if store.count_tracks() <= config.search.exact_limit:
        found, info = store.candidates([], config.search, config.match.metric, 0.0)
        return found, info, None
    fixed = _threshold(store, results, config, calibrated)
    probes = [e for r in results if r.info.role == "probe" for e in r.embeddings.values()]
    found, info = store.candidates(probes, config.search, config.match.metric, fixed.value, config.match.min_frames)
    return found, info, fixed


class Lookup:
    """For a live stream: probe embeddings → the identities to compare them with, through the file's index;
    remembers every identity it answered (the run's gallery, kept in the run folder)."""

    def __init__(self, store: GalleryStore, config, threshold: float) -> None:
        self.find = store.lookup(config.search, config.match.metric, threshold, config.match.min_frames)
        self.seen: dict[int, Identity] = {}

    def __call__(self, probes: list[Embedding]) -> list[Identity]:
        found = self.find(probes)
        for i in found:
            self.seen.setdefault(i.key, i)
        return found


def save_features(path: Path, identities: list[Identity]) -> None:
    """The identities' gallery tracks as one .npz: names, keys, and per track its owner, id, frames and feature."""
    members = [(k, m) for k, i in enumerate(identities) for m in i.members]
    feats = np.stack([m.feature for _, m in members]).astype(np.float32) if members else np.zeros((0, 1, 1),
                                                                                                    np.float32)
    np.savez(path, names=np.array([i.name for i in identities], dtype=str),
             keys=np.array([i.key for i in identities], np.int64),
             owner=np.array([k for k, _ in members], np.int64),
             track=np.array([m.track_id for _, m in members], np.int64),
             n_frames=np.array([m.n_frames for _, m in members], np.int64),
             first=np.array([m.first_frame for _, m in members], np.int64),
             last=np.array([m.last_frame for _, m in members], np.int64), features=feats)


def load_features(path: Path) -> list[Identity]:
    """The identities ``save_features`` kept (UserError naming the file when it is unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            members: dict[int, list[Embedding]] = {}
            feats = f["features"]
            if feats.dtype.kind != "f":
                raise UserError(f"the run's gallery features are damaged: {feats.dtype}, not floats", path)
            finite = np.isfinite(feats.reshape(len(feats), -1)).all(axis=1)
            if not finite.all():
                bad = int(f["track"][int(np.flatnonzero(~finite)[0])])
                raise UserError(f"the run's gallery features are damaged: track {bad}'s feature holds NaN or "
                                "infinite values", path)
            for k, tid, n, first, last, feat in zip(f["owner"], f["track"], f["n_frames"], f["first"], f["last"],
                                                   feats):
                members.setdefault(int(k), []).append(Embedding(GALLERY_VIDEO, int(tid), feat.copy(), int(n),
                                                                int(first), int(last)))
            return [Identity(str(name), tuple(members.get(k, ())), key=int(key))
                    for k, (name, key) in enumerate(zip(f["names"], f["keys"])) if members.get(k)]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"the run's gallery features are unreadable ({exc})", path) from None
