"""python main.py rematch RUN_DIR [--threshold auto|D] [--identity NAME=ID,...] [--output DIR] [--name NAME]

Decides again from a finished run's stored features, without running a model: same identities (or new names),
same metric and min_frames, another threshold. Writes a new run folder (run.json, matches.csv, the result videos
drawn again from the stored tracks, and copies of the features and track files so it can be rematched in turn);
the original run is left untouched. At the run's own threshold the decisions are the run's, bit for bit.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from allinone.commands.args import Parser, fpir_arg, threshold_arg
from allinone.decide.calibration import load_calibration
from allinone.config import MatchConfig
from allinone.errors import UserError, read_json, reports_user_errors
from allinone.decide.identities import check_named, gallery_identities, parse_identity
from allinone.results.manifest import GALLERY_DB_PICTURES, assignment_entry, decisions_entries, write_distances
from allinone.decide.match import Matcher
from allinone.io.run_folder import MANIFEST, RunWriter
from allinone.records import Decision, DecisionEvent, Embedding, VideoInfo
from allinone.results.report import write_report
from allinone.decide.threshold import BASES, NOTHING, Threshold, check_threshold, resolve_threshold
from allinone.decide.tracks import Decided, decide_tracks

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python main.py rematch",
                                description="Decide again from a run's stored features with another threshold or "
                                            "other identity names; no model runs. Writes a new run folder.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder (with run.json)")
    p.add_argument("--threshold", type=threshold_arg, default=argparse.SUPPRESS, metavar="auto|D",
                   help="the new threshold (default: the run's own)")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="choose the threshold from a calibration file made for the run's checkpoint and metric "
                        "(its impostor distances join the run's)")
    p.add_argument("--target-fpir", type=fpir_arg, default=None, metavar="X",
                   help="auto threshold: the FPIR to aim for (default: the run's)")
    p.add_argument("--identity", action="append", type=parse_identity, default=None, metavar="NAME=ID[,ID...]",
                   help="name gallery identities anew (default: the run's identities)")
    p.add_argument("--output", type=Path, default=None, metavar="DIR",
                   help="where the new run folder goes (default: beside RUN_DIR)")
    p.add_argument("--name", default=None, metavar="NAME", help="its name (default: <run>-rematch, numbered)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    return p


def _load_manifest(run_dir: Path) -> dict:
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise UserError("not a run folder", run_dir)
    if not path.is_file():
        raise UserError(f"no {MANIFEST} here: not a finished run folder", run_dir)
    m = read_json(path, MANIFEST)
    if not isinstance(m, dict) or m.get("version") != 2 or "identities" not in m:
        raise UserError("written by an older allinone or by --track-only: it has no identities and decisions to "
                        "redo", path)
    return m


def _feature(f: Path, shape: tuple | None) -> np.ndarray:
    """A stored feature, refused by file name unless it is a finite float [parts, channels] array (of ``shape``)."""
    if not f.is_file():
        raise UserError("stored feature missing", f)
    try:
        feat = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        why = "pickled data, not an array" if "allow_pickle" in str(exc) else str(exc).splitlines()[0]
        raise UserError(f"stored feature is not a readable .npy array (damaged or overwritten: {why})", f) from None
    if not isinstance(feat, np.ndarray) or feat.dtype.kind != "f" or feat.ndim != 2 or 0 in feat.shape:
        raise UserError(f"stored feature has the wrong form ({getattr(feat, 'dtype', type(feat).__name__)} "
                        f"{getattr(feat, 'shape', '')}; a feature is a float [channels, parts] array)", f)
    if shape is not None and feat.shape != shape:
        raise UserError(f"stored feature has shape {feat.shape}, the run's other features {shape}", f)
    if not np.isfinite(feat).all():
        raise UserError(f"stored feature has {int((~np.isfinite(feat)).sum())} NaN or infinite value(s)", f)
    return feat


def _embeddings(run_dir: Path, m: dict) -> tuple[dict[str, list[Embedding]], dict[str, list[int]]]:
    """Per video: the tracks' embeddings from the stored features (in track order), and all track ids."""
    out: dict[str, list[Embedding]] = {}
    ids: dict[str, list[int]] = {}
    shape = None  # every feature of a run has the first one's shape
    for v in m["videos"]:
        out[v["name"]] = []
        ids[v["name"]] = [t["id"] for t in v["tracks"]]
        for t in v["tracks"]:
            if "feature" not in t:
                continue
            f = run_dir / t["feature"]
            feat = _feature(f, shape)
            shape = shape or feat.shape
            out[v["name"]].append(Embedding(v["name"], t["id"], feat.astype(np.float32, copy=False),
                                            t["n_silhouettes"], t["first_frame"] - 1, t["last_frame"] - 1))
    return out, ids


def _events(m: dict, decisions: list[Decision], embeddings: dict[str, list[Embedding]], spans: dict) -> dict:
    """Each decision's event, by (video, track): the run's own where the rematch decides the same (so a rematch at
    the same threshold reproduces run.json's rows, wall time included), else one stamped now. A track's silhouettes
    are the run's: a rematch does not change them."""
    old = {(r["probe_video"], r["probe_track"]): r for r in m.get("matches") or []}
    used = {(e.video, e.track_id): e.n_frames for es in embeddings.values() for e in es}
    out = {}
    for d in decisions:
        key = (d.probe_video, d.probe_track)
        row = old.get(key) or {}
        event = DecisionEvent.of(d, spans.get(key), row.get("silhouettes", used.get(key)), True)
        same = all(row.get(k) == v for k, v in event.to_json().items() if k != "wall_time")
        out[key] = replace(event, wall_time=row["wall_time"]) if same and row.get("wall_time") else event
    return out


def _stored_identities(run_dir: Path, m: dict, metric: str, threshold) -> list:
    """The gallery a --gallery-db run used: the features it kept in its folder (so later changes of the file do
    not change the rematch); a run from before they were kept reads the file as it is now, with a warning."""
    from allinone.gallery.run_file import FEATURES, load_features
    if m.get("gallery_features"):
        search = m.get("search") or {}
        if search.get("mode") == "index" and (threshold == "auto" or (isinstance(threshold, float)
                                                                      and threshold > search["threshold"])):
            log.warning("%s: the run searched a large gallery file for identities within %.4g; its kept features "
                        "hold those and the nearest others, so identities within a larger threshold may be missing",
                        run_dir, search["threshold"])
        return load_features(run_dir / m["gallery_features"])
    from allinone.gallery.store import GalleryStore, ModelInfo
    log.warning("%s: the run kept no %s (made by an older allinone): deciding from %s as it is now", run_dir,
                FEATURES, m["gallery_db"])
    gait = m["weights"]["gait"]
    with GalleryStore(m["gallery_db"], readonly=True) as store:
        store.check_model(ModelInfo(gait["sha256"], gait["path"], gait["arch"], metric,
                                    gait.get("embedding", "embed_1"), inputs=_run_inputs(m)))
        return store.identities()


def _run_inputs(m: dict):
    """The run's segmenter, as its run.json recorded it (InputModels; its pose model is not recorded: unknown)."""
    from allinone.io.input_models import InputModel, InputModels
    seg = m["weights"].get("segmenter")
    if seg is None:  # no segmenter ran: a keypoint-only gait model
        return InputModels(InputModel("", ""))
    return InputModels(InputModel(seg.get("path") or "", seg.get("sha256")))


@dataclass
class _Stored:
    """What a finished run stored for deciding again: its manifest, match settings, features and identities."""

    m: dict
    cfg: MatchConfig
    embeddings: dict[str, list[Embedding]]
    track_ids: dict[str, list[int]]
    identities: list
    gallery: str  # the gallery's name in file names (its video, or the gallery file's stem)
    named: tuple  # the identities' names, as settings

    @property
    def probe_videos(self) -> list[dict]:
        return [v for v in self.m["videos"] if v["role"] == "probe"]


def _stored(run_dir: Path, threshold, named, target_fpir: float | None) -> _Stored:
    m = _load_manifest(run_dir)
    settings = m["settings"]["match"]
    metric = settings["metric"]
    cfg = MatchConfig(metric=metric, threshold=None, min_frames=settings["min_frames"],
                      target_fpir=target_fpir or settings.get("target_fpir", 0.01),
                      auto_min_overlap=settings.get("auto_min_overlap", 5))
    if isinstance(threshold, float):
        check_threshold(threshold, metric)
    embeddings, track_ids = _embeddings(run_dir, m)
    if m.get("gallery_db"):
        if named is not None:
            raise UserError("this run's gallery is a gallery file: rename people there (python main.py gallery "
                            "rename), not with --identity")
        identities = _stored_identities(run_dir, m, metric, threshold)
        return _Stored(m, cfg, embeddings, track_ids, identities, Path(m["gallery_db"]).stem, ())
    if named is not None:
        check_named(tuple(named))
    else:
        named = tuple((i["name"], tuple(t["track"] for t in i["tracks"])) for i in m["identities"])
    gallery = m["videos"][0]["name"]
    identities = gallery_identities(embeddings[gallery], tuple(named), strict=True)
    return _Stored(m, cfg, embeddings, track_ids, identities, gallery, tuple(named))


def _threshold(st: _Stored, usable: list, threshold, calibration: str | None,
               target_fpir: float | None) -> Threshold:
    """The run's own threshold kept as it was, or one decided again (a number, auto, a calibration file)."""
    m, cfg = st.m, st.cfg
    t = m.get("threshold") or {}
    if threshold == "keep" and (calibration or target_fpir is not None or t.get("basis") not in BASES):
        threshold = None  # decide the threshold again (an old run's "default" basis no longer exists)
    if threshold == "keep":
        value = NOTHING if t["basis"] == "none" else t["value"]
        return Threshold(value, t["basis"], {k: v for k, v in t.items() if k not in ("value", "basis")})
    gait = m["weights"].get("gait") or {}
    cal = load_calibration(Path(calibration), gait.get("sha256"), cfg.metric, gait.get("embedding"),
                           inputs=_run_inputs(m)) if calibration else None
    every = [e for v in m["videos"] for e in st.embeddings[v["name"]]]
    together = (t.get("evidence") or {}).get("seen_together") or []
    return resolve_threshold(threshold, cfg.metric, every, usable, together, target_fpir=cfg.target_fpir,
                             min_overlap=cfg.auto_min_overlap, min_frames=cfg.min_frames, calibration=cal)


def _copy_videos(run_dir: Path, st: _Stored, writer: RunWriter, decided: Decided, quiet: bool) -> list[dict]:
    """run.json's videos for the new folder: features and track files copied, probe result videos drawn again."""
    from allinone.results.render import render_video
    out = []
    for v in st.m["videos"]:
        entry = {k: x for k, x in v.items() if k not in ("annotated_video", "result_video", "timings_s",
                                                         "end_to_end_fps")}
        entry["tracks"] = [{k: x for k, x in t.items() if k not in ("silhouettes_png_dir", "silhouettes_pkl")}
                           for t in v["tracks"]]
        for t in entry["tracks"]:
            if "feature" in t:
                shutil.copyfile(run_dir / t["feature"], writer.path(t["feature"]))
        shutil.copyfile(run_dir / v["tracks_file"], writer.path(v["tracks_file"]))
        if v["role"] == "probe":
            src = Path(v["path"])
            if src.is_file():
                rot = (v.get("rotation") or {}).get("degrees", 0)
                info = VideoInfo(src, v["name"], "probe", v["frames"], v["fps"], v["width"], v["height"], rot)
                entry.update(render_video(info, run_dir / v["tracks_file"], writer, st.gallery, decided.identities,
                                          decided.decisions, quiet, defaultdict(float), annotated=False))
            else:
                log.warning("%s: the probe video is gone, so no result video is drawn for it", src)
                entry["result_video"] = None
        out.append(entry)
    return out


def _pictures(st: _Stored) -> dict:
    """The gallery's pictures only (a probe video may carry the name a gallery file's tracks have)."""
    m = st.m
    pictures = {(v["name"], t["id"]): {k: t[k] for k in ("crop", "gei") if k in t}
                for v in m["videos"] if v["role"] == "gallery" for t in v["tracks"]}
    for i in m["identities"]:  # a gallery file's pictures, copied into the run folder by the run
        if m.get("gallery_db") and i["tracks"] and ("crop" in i or "gei" in i):
            first = i["tracks"][0]
            pictures.setdefault((first["video"], first["track"]), {k: i[k] for k in ("crop", "gei") if k in i})
    return pictures


def _manifest(run_dir: Path, st: _Stored, decided: Decided, writer: RunWriter, matcher: Matcher,
              quiet: bool) -> dict:
    m, cfg = st.m, st.cfg
    spans = {(v["name"], t["id"]): (t["first_frame"], t["last_frame"]) for v in st.probe_videos for t in v["tracks"]}
    extra = decisions_entries(decided.identities, decided.usable, decided.threshold, decided.decisions, writer, spans,
                              _pictures(st), _events(m, decided.decisions, st.embeddings, spans))
    extra["assignment"] = assignment_entry(cfg.solve_seconds, matcher.solved)
    extra.update(write_distances(writer, matcher.names, matcher.distances))
    videos = _copy_videos(run_dir, st, writer, decided, quiet)
    if m.get("gallery_features"):
        shutil.copyfile(run_dir / m["gallery_features"], writer.path(m["gallery_features"]))
    for folder in ("pictures", GALLERY_DB_PICTURES):
        if (run_dir / folder).is_dir():
            shutil.copytree(run_dir / folder, writer.path(folder))
    settings = m["settings"]["match"]
    kept = {k: x for k, x in m.items() if k not in ("videos", "matches", "identities", "threshold", "timings_s",
                                                     "created", "report", "assignment", "distances_file")}
    manifest = {**kept, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "source_run": str(run_dir.resolve()),
                "settings": {**m["settings"], "match": {**settings, "threshold": decided.threshold.to_json()["value"],
                                                        "target_fpir": cfg.target_fpir},
                             "identities": [list(x) for x in st.named]},
                "videos": videos, **extra}
    manifest["report"] = write_report(writer.dir, manifest)
    return manifest


def rematch(run_dir: Path, threshold: float | None | str = "keep", named=None, output: Path | None = None,
            name: str | None = None, quiet: bool = True, calibration: str | None = None,
            target_fpir: float | None = None) -> Path:
    """A new run folder with the run's tracks decided again (the runner's decide step over the stored features)."""
    st = _stored(run_dir, threshold, named, target_fpir)
    matcher = Matcher(st.cfg)
    usable = matcher.usable(st.identities)
    thr = _threshold(st, usable, threshold, calibration, target_fpir)
    probes = [e for v in st.probe_videos for e in st.embeddings[v["name"]]]
    tracks = [(v["name"], tid) for v in st.probe_videos for tid in st.track_ids[v["name"]]]
    decided = Decided(st.identities, usable, thr, decide_tracks(matcher, probes, tracks, st.identities, thr))
    with RunWriter(output if output is not None else run_dir.parent, name,
                   default=f"{run_dir.name}-rematch") as writer:
        return writer.finalize(_manifest(run_dir, st, decided, writer, matcher, quiet))


@reports_user_errors
def rematch_command(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    out = rematch(args.run_dir, getattr(args, "threshold", "keep"), args.identity, args.output, args.name,
                  args.quiet, args.calibration, args.target_fpir)
    log.info("rematched in %.1f s", time.perf_counter() - t0)
    from allinone.errors import read_json
    from allinone.results.summary import console_summary
    summary = console_summary(read_json(Path(out) / "run.json", "run.json"), out)  # the table a run prints
    if summary:
        print(summary)
    print(out)
    return 0
