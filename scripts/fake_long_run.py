"""Write a finished run folder of a long synthetic run, in the real format, to measure rematch at scale.

    python scripts/fake_long_run.py OUT_DIR [--tracks 10000] [--identities 200] [--hours 3] [--seed 0]
    /usr/bin/time -v python main.py rematch OUT_DIR/long-run --output /tmp/x

A gallery video of one track per identity and one probe video of ``--hours`` at 25 frames/s with ``--tracks`` tracks
of 1–20 s (about 6 people in view at a time): 70 % are gallery people (their feature is the identity's plus noise),
the rest strangers. Features are GaitBase-shaped ([256, 16] float32); every track has a MOT row per frame; the videos
themselves do not exist (rematch then draws no result video). The script writes the raw parts (features, track
files, a run.json with videos, identities, a user threshold and the settings), then lets rematch itself decide and
write the folder's run.json, matches.csv, distances.npz and report, so the result is what a run writes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FPS = 25.0
C, P = 256, 16


def _features(rng, n_probe: int, n_ident: int):
    gallery = rng.normal(size=(n_ident, C, P)).astype(np.float32)
    known = rng.random(n_probe) < 0.7
    who = rng.integers(0, n_ident, n_probe)
    probe = rng.normal(size=(n_probe, C, P)).astype(np.float32)
    probe[known] = gallery[who[known]] + 0.45 * probe[known]  # near their identity; strangers far from all
    return gallery, probe


def _mot(path: Path, spans: np.ndarray, ids: np.ndarray, rng) -> None:
    """One MOT row per track per frame, by frame then id (as the run's MotWriter writes them)."""
    frames = np.concatenate([np.arange(a, b + 1) for a, b in spans]) + 1
    tid = np.repeat(ids, spans[:, 1] - spans[:, 0] + 1)
    order = np.lexsort((tid, frames))
    x = rng.uniform(0, 1800, len(frames)).round(2)
    with open(path, "w", encoding="utf-8") as fh:
        for f, i, xx in zip(frames[order].tolist(), tid[order].tolist(), x.tolist()):
            fh.write(f"{f},{i},{xx:.2f},300.00,80.00,200.00,0.9000,-1,-1,-1\n")


def _video(name: str, role: str, frames: int, spans: np.ndarray, ids: np.ndarray) -> dict:
    return {"name": name, "role": role, "path": f"/nonexistent/{name}.mp4", "frames": frames, "fps": FPS,
            "width": 1920, "height": 1080, "rotation": {"degrees": 0, "basis": "none"},
            "tracks_file": f"tracks/{name}.txt", "silhouette_fps": FPS,
            "tracks": [{"id": int(t), "first_frame": int(a) + 1, "last_frame": int(b) + 1, "n_frames": int(b - a + 1),
                        "n_silhouettes": int(b - a + 1), "dropped": {}, "feature": f"features/{name}/{t:03d}.npy"}
                       for t, (a, b) in zip(ids.tolist(), spans.tolist())],
            "timings_s": {}, "end_to_end_fps": None}


def write_raw(folder: Path, tracks: int, identities: int, hours: float, seed: int) -> None:
    from allinone.config import RunConfig

    rng = np.random.default_rng(seed)
    gallery, probe = _features(rng, tracks, identities)
    frames = int(hours * 3600 * FPS)
    length = rng.integers(25, 500, tracks)
    starts = np.sort(rng.integers(0, frames - 500, tracks))
    spans = np.stack([starts, starts + length - 1], 1)
    g_spans = np.stack([np.arange(identities) * 60, np.arange(identities) * 60 + 50], 1)
    g_ids, p_ids = np.arange(1, identities + 1), np.arange(1, tracks + 1)
    for name, feats, ids in (("gallery", gallery, g_ids), ("cam", probe, p_ids)):
        (folder / "features" / name).mkdir(parents=True)
        for t, f in zip(ids.tolist(), feats):
            np.save(folder / "features" / name / f"{t:03d}.npy", f)
    (folder / "tracks").mkdir()
    _mot(folder / "tracks/gallery.txt", g_spans, g_ids, rng)
    _mot(folder / "tracks/cam.txt", spans, p_ids, rng)
    settings = RunConfig(gallery=Path("/nonexistent/gallery.mp4"), probes=(Path("/nonexistent/cam.mp4"),)).to_json()
    settings["match"].update(metric="euc", threshold=14.0)
    manifest = {"version": 2, "created": "2026-12-05T00:00:00+00:00", "allinone_version": "synthetic",
                "settings": settings, "device": "cpu", "platform": {},
                "weights": {"gait": {"path": "synthetic.pt", "sha256": "0" * 64, "arch": "gaitbase",
                                     "embedding": "embed_1", "metric": "euc"}},
                "videos": [_video("gallery", "gallery", int(g_spans[-1, 1]) + 1, g_spans, g_ids),
                           _video("cam", "probe", frames, spans, p_ids)],
                "identities": [{"name": f"G{t}", "key": int(t), "tracks": [{"video": "gallery", "track": int(t)}]}
                               for t in g_ids.tolist()],
                "threshold": {"value": 14.0, "basis": "user"}}
    (folder / "run.json").write_text(json.dumps(manifest))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--tracks", type=int, default=10_000)
    p.add_argument("--identities", type=int, default=200)
    p.add_argument("--hours", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from allinone.commands.rematch import rematch

    raw = args.out / "long-run-raw"
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    write_raw(raw, args.tracks, args.identities, args.hours, args.seed)
    done = rematch(raw, "keep", output=args.out, name="long-run")
    shutil.rmtree(raw)
    print(done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
