"""Embedding a dataset's sequences with a cache that survives interruption.

The cache is one SQLite file per (checkpoint sha256, frames limit): a row per sequence file, keyed by its path
relative to the dataset root together with its size and modification time, holding the float32 embedding. Rows are
committed every few seconds, so an interrupted evaluation resumes where it stopped and another protocol on the same
dataset reuses every embedding. Unreadable or empty files are listed and skipped, never fatal.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from allinone.evaluate.dataset import Sequence, load_keypoints, load_silhouettes
from allinone.io.safe_pickle import UnsafePickle

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 5.0


class EmbeddingCache:
    """Embeddings of one checkpoint at one frames limit, by sequence file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS emb (file TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                        "c INTEGER, p INTEGER, data BLOB)")
        self.db.commit()

    def get(self, rel: str, stat: os.stat_result) -> np.ndarray | None:
        row = self.db.execute("SELECT size, mtime_ns, c, p, data FROM emb WHERE file = ?", (rel,)).fetchone()
        if row is None or row[0] != stat.st_size or row[1] != stat.st_mtime_ns:
            return None
        return np.frombuffer(row[4], np.float32).reshape(row[2], row[3]).copy()

    def put(self, rel: str, stat: os.stat_result, feat: np.ndarray) -> None:
        feat = np.ascontiguousarray(feat, np.float32)
        self.db.execute("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?, ?, ?)",
                        (rel, stat.st_size, stat.st_mtime_ns, feat.shape[0], feat.shape[1], feat.tobytes()))

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.commit()
        self.db.close()


@dataclass
class Embedded:
    """The sequences that were embedded (in dataset order), their embeddings [n, c, p], and what was skipped."""

    sequences: list[Sequence]
    embeddings: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


def embed_dataset(root: Path, sequences: list[Sequence], embedder, cache: EmbeddingCache, *, batch: int = 8,
                  quiet: bool = False) -> Embedded:
    """Embed every sequence (cached ones are read back); unreadable or empty files are skipped with a reason."""
    feats: dict[int, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    todo: list[tuple[int, os.stat_result, np.ndarray]] = []
    computed = cached = 0
    # keypoint models (GaitGraph) read OpenGait's pose pickles, float [T, 17, 3]; the others silhouettes
    load = load_keypoints if getattr(embedder, "input", "silhouettes") == "keypoints" else load_silhouettes
    t0 = time.perf_counter()
    last_commit = t0
    bar = tqdm(total=len(sequences), desc="embed", unit="seq", disable=quiet, dynamic_ncols=True)

    def flush() -> None:
        nonlocal computed, last_commit
        if not todo:
            return
        out = embedder([x for _, _, x in todo], batch=batch)
        for (i, st, _), f in zip(todo, out):
            feats[i] = f
            cache.put(sequences[i].path, st, f)
        computed += len(todo)
        bar.update(len(todo))
        todo.clear()
        if time.perf_counter() - last_commit > COMMIT_EVERY_S:
            cache.commit()
            last_commit = time.perf_counter()
        elapsed = time.perf_counter() - t0
        bar.set_postfix_str(f"{computed / elapsed:.2f} seq/s computed" if elapsed > 0 else "")

    try:
        for i, seq in enumerate(sequences):
            f = root / seq.path
            try:
                st = f.stat()
            except OSError as exc:
                skipped.append((seq.path, f"cannot be read ({exc.strerror or exc})"))
                bar.update(1)
                continue
            hit = cache.get(seq.path, st)
            if hit is not None:
                feats[i] = hit
                cached += 1
                bar.update(1)
                continue
            try:
                sils = load(f)
            except UnsafePickle:  # a hostile dataset is not evaluated, nor a sequence of it quietly dropped
                raise
            except Exception as exc:  # a broken pickle can raise almost anything; it is listed, not fatal
                skipped.append((seq.path, f"{type(exc).__name__}: {exc}"[:200]))
                bar.update(1)
                continue
            todo.append((i, st, sils))
            if len(todo) >= 8 * batch:  # a pool, so that sequences of equal length can share a forward
                flush()
        flush()
    finally:
        cache.commit()
        bar.close()
    keep = sorted(feats)
    if skipped:
        log.warning("%d of %d sequences skipped (unreadable or empty); the first: %s: %s", len(skipped),
                    len(sequences), *skipped[0])
    emb = np.stack([feats[i] for i in keep]) if keep else np.zeros((0, 0, 0), np.float32)
    return Embedded([sequences[i] for i in keep], emb, skipped, computed, cached, time.perf_counter() - t0)
