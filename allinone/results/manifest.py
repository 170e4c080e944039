"""run.json, built in one place from the run's records (and read back by rematch)."""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from allinone import __version__
from allinone.io.run_folder import sha256_path
from allinone.records import DROP_REASONS, Decision, DecisionEvent, Identity, TrackResult, VideoInfo
from allinone.decide.threshold import Threshold

MATCHES_CSV = "matches.csv"
DISTANCES = "distances.npz"  # every decided probe track × usable identity distance (the rankings keep a few)
GALLERY_DB_PICTURES = "gallery-db-pictures"  # a gallery file's pictures, apart from pictures/<video name>/
MATCHES_HEADER = ["probe_video", "probe_track", "status", "identity", "distance", "reason", "first_frame",
                  "last_frame", "ranking"]


def track_entry(t: TrackResult) -> dict:
    """A track of ``videos[].tracks``: frames 1-based, silhouettes used and dropped by reason, its files."""
    entry = {"id": t.track_id, "first_frame": t.first_frame + 1, "last_frame": t.last_frame + 1,
             "n_frames": t.n_frames}
    if t.dropped or t.n_silhouettes:
        entry["n_silhouettes"] = t.n_silhouettes
        entry["dropped"] = {k: int(t.dropped.get(k, 0)) for k in DROP_REASONS}
    if t.keypoints is not None:
        entry["n_poses"] = len(t.keypoints)  # frames the pose stage gave keypoints for
    for key in ("silhouettes_png_dir", "silhouettes_pkl", "keypoints_pkl", "feature", "crop", "gei"):
        if key in t.files:
            entry[key] = t.files[key]
    return entry


def video_entry(info: VideoInfo, tracks: dict[int, TrackResult], outputs: dict[str, str],
                timings: dict[str, float], silhouette_fps: float | None) -> dict:
    entry = {"name": info.name, "role": info.role, "path": str(info.path), "frames": info.frames, "fps": info.fps,
             "width": info.width, "height": info.height,
             "rotation": {"degrees": info.rotation, "basis": info.rotation_basis},
             "tracks_file": f"tracks/{info.name}.txt", **outputs}
    if silhouette_fps is not None:
        entry["silhouette_fps"] = round(silhouette_fps, 3)
    entry["tracks"] = [track_entry(tracks[t]) for t in sorted(tracks)]
    entry["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    first_pass = timings.get("total", 0.0)  # the streamed pass, gait forwards included (tracks end inside it)
    entry["end_to_end_fps"] = round(info.frames / first_pass, 2) if first_pass > 0 else None
    return entry


def identity_entry(identity: Identity, usable: set[tuple[str, int]], pictures: dict | None = None) -> dict:
    """An identity of run.json, each track with its pictures (run-relative paths) where there are some, and the
    identity with those of its first track that has some."""
    entry = {"name": identity.name, "key": identity.key,
             "tracks": [{"video": m.video, "track": m.track_id, "n_silhouettes": m.n_frames,
                         "usable": (m.video, m.track_id) in usable,
                         **((pictures or {}).get((m.video, m.track_id)) or {})} for m in identity.members]}
    for m in identity.members:
        pics = (pictures or {}).get((m.video, m.track_id))
        if pics:
            entry.update(pics)
            break
    return entry


def decision_entry(d: Decision, event: DecisionEvent) -> dict:
    """A row of run.json "matches": the decision's event as every output has it (DecisionEvent.to_json), with the
    probe named in run.json's own keys (probe_video, probe_track) and the ranking, which only run.json carries."""
    row = {"probe_video": d.probe_video, "probe_track": d.probe_track, **event.to_json(),
           "ranking": [{"identity": n, "distance": round(float(x), 6)} for n, x in d.ranking]}
    if d.matched is not None:  # the identity's track it was nearest to (the report shows its pictures)
        row["matched_track"] = {"video": d.matched[0], "track": d.matched[1]}
    return row


def _event_of(d: Decision, sent: DecisionEvent | None, spans: dict) -> DecisionEvent:
    """The event sent for ``d`` where it says what ``d`` says; else (none sent, or the run's end changed the decision,
    as a run without threshold evidence does) the decision's own event, stamped now."""
    if sent is not None and (sent.status, sent.identity, sent.reason) == (d.status, d.identity, d.reason):
        return sent
    return DecisionEvent.of(d, spans.get((d.probe_video, d.probe_track)), sent.silhouettes if sent else None, True)


def decisions_entries(identities: list[Identity], usable: list[Identity], threshold: Threshold,
                      decisions: list[Decision], writer, spans: dict[tuple[str, int], tuple[int, int]],
                      pictures: dict | None = None,
                      events: dict[tuple[str, int], DecisionEvent] | None = None) -> dict:
    """run.json's "identities", "threshold", "matches" and "matches_file"; writes matches.csv. ``events``: the
    events the run sent out for these decisions, by (video, track); a decision without one gets its event here."""
    ok = {(m.video, m.track_id) for i in usable for m in i.members}
    events = events or {}
    rows = [decision_entry(d, _event_of(d, events.get((d.probe_video, d.probe_track)), spans)) for d in decisions]
    writer.write_csv(MATCHES_CSV, MATCHES_HEADER, [
        [r["probe_video"], r["probe_track"], r["status"], r["identity"] or "",
         "" if r["distance"] is None else f"{r['distance']:.6f}", r["reason"] or "", r["first_frame"],
         r["last_frame"], ";".join(f"{x['identity']}:{x['distance']:.6f}" for x in r["ranking"])] for r in rows])
    return {"identities": [identity_entry(i, ok, pictures) for i in identities], "threshold": threshold.to_json(),
            "matches": rows, "matches_file": MATCHES_CSV}


def write_distances(writer, names: list[str], distances: dict[str, tuple[list[int], np.ndarray]]) -> dict:
    """distances.npz beside run.json: probe_video [n], probe_track [n], identity [k] and distance [n, k] float32
    for every probe track that was compared (run.json's rankings keep the nearest few); returns run.json's entry."""
    videos = [v for v, (ids, _) in distances.items() for _ in ids]
    tracks = [t for ids, _ in distances.values() for t in ids]
    d = np.concatenate([m for _, m in distances.values()]) if distances else np.zeros((0, len(names)))
    with open(writer.path(DISTANCES), "wb") as f:
        np.savez(f, probe_video=np.array(videos, dtype=str), probe_track=np.array(tracks, np.int64),
                 identity=np.array(names, dtype=str), distance=np.asarray(d, np.float32))
    return {"distances_file": DISTANCES}


def assignment_entry(seconds: float, programs: list[dict]) -> dict:
    """run.json "assignment": the integer program's time limit and, per probe video where one ran, its pairs,
    seconds, status (optimal | time_limit) and gap to the optimum's bound (decide/assign.py)."""
    limited = [p for p in programs if p.get("status") != "optimal"]
    return {"time_limit_s": seconds, "exact": not limited, "programs": programs}


def weights_entry(path: str | None, sha256: str | None = None) -> dict:
    """A model file and its sha256 (``sha256`` when the caller hashed it already)."""
    if not path:
        return {"path": None, "sha256": None}
    p = Path(path)
    return {"path": str(p), "sha256": sha256 or (sha256_path(p) if p.exists() else None)}


def run_manifest(created: str, config, device: str, stages, videos: list[dict], extra: dict,
                 gait_sha256: str | None = None) -> dict:
    return {
        "version": 2,
        "created": created,
        "allinone_version": __version__,
        "settings": config.to_json(),
        "device": device,
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
        "weights": {
            "detector": weights_entry(getattr(stages.detector, "path", None)),
            **({"segmenter": weights_entry(config.segment.model)} if stages.segmenter else {}),
            **({"gait": {**weights_entry(config.gait.model, gait_sha256), "arch": stages.embedder.arch,
                         "embedding": getattr(stages.embedder, "embedding", "embed_1"),
                         "metric": stages.embedder.metric}} if stages.embedder else {}),
        },
        "videos": videos,
        **extra,
    }
