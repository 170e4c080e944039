"""python main.py enroll VIDEO [--name NAME] [--gallery-db FILE], and python main.py gallery ... (manage the file).

A named video is one person: its longest usable track (most silhouettes) is enrolled under the name and the other
tracks are reported. An unnamed video gives one identity per usable track, named ``<video stem>-G<track id>``.
The video is processed in a temporary folder that is removed afterwards; only the gallery file changes, in one
transaction, after every model has run.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from dataclasses import replace
import sys
import tempfile
from pathlib import Path

from allinone.commands.args import Parser
from allinone.errors import UserError, reports_user_errors
from allinone.results.words import count

log = logging.getLogger(__name__)

DEFAULT_DB = Path("gallery.sqlite")


def _enroll_parser() -> argparse.ArgumentParser:
    from allinone.commands.args import add_model_args
    p = Parser(prog="python main.py enroll",
                                description="Add the people of a video to a gallery file, once; runs then take "
                                            "--gallery-db FILE and never recompute them.")
    p.add_argument("video", type=Path, metavar="VIDEO")
    p.add_argument("--name", default=None, metavar="NAME",
                   help="the one person this video shows (its longest usable track); without it, every usable "
                        "track becomes an identity <video>-G<id>")
    p.add_argument("--gallery-db", type=Path, default=DEFAULT_DB, metavar="FILE",
                   help=f"the gallery file, created if missing (default: {DEFAULT_DB})")
    add_model_args(p)
    return p


@contextlib.contextmanager
def _without_threshold_notes():
    """An enrol decides nothing: the threshold its run settles (0, given, to decide nothing) is no news to the user,
    so its notes (INFO) are left out; warnings still show."""
    logger = logging.getLogger("allinone.decide.threshold")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def enroll(args: argparse.Namespace) -> list:
    """Enrol the video's people; returns what the gallery file gained (gallery.store.Enrolled, one per identity)."""
    from allinone.commands.args import spec_from_args
    from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
    from allinone.io.run_folder import ENROL_TEMP, sha256_path, sweep_leftovers, writable_folder
    from allinone.runner.runner import run
    from allinone.decide.identities import check_name, clean_name
    from allinone.io.video import VideoSource
    from allinone.stages.build import check_models_given, input_models, resolve_models

    VideoSource(args.video)  # a bad video or name is refused before any model loads
    name = None if args.name is None else check_name(args.name, "--name")
    sweep_leftovers(tempfile.gettempdir(), ENROL_TEMP, "interrupted enrol")  # a killed enrol's temporary folder
    db = Path(args.gallery_db)
    # a new gallery file is made only when there is someone to put in it; an existing one is checked first
    new = not db.exists() or (db.is_file() and db.stat().st_size == 0)
    if new and db.parent.exists():
        writable_folder(db.parent, "gallery file's folder")
    with contextlib.ExitStack() as stack:
        store = None if new else stack.enter_context(GalleryStore(db))
        if store is not None:
            store.verify()
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"allinone-enrol-{os.getpid()}-"))
        config = spec_from_args(args, gallery=args.video, output=Path(tmp), name="enrol")
        config = replace(config, render=False, save_silhouettes="none", match=replace(config.match, threshold=0.0))
        check_models_given(config)
        config = resolve_models(config)  # the default models named, so that the store can check them before the run
        inputs = input_models(config)
        source = ""
        if config.gait.model and Path(config.gait.model).is_file():  # an export names the checkpoint it came from
            if Path(config.gait.model).suffix.lower() == ".onnx":
                from allinone.gait.onnx import source_sha256
                source = source_sha256(config.gait.model)
        if store is not None and config.gait.model and Path(config.gait.model).is_file():  # before running any
            store.check_model(ModelInfo(sha256_path(config.gait.model), config.gait.model, "", "", "",
                                        source_sha256=source, inputs=inputs))
        with _without_threshold_notes():
            result = run(config)
        gait = result.manifest["weights"]["gait"]
        # an export that names its checkpoint enrols under the checkpoint's sha256, so that the checkpoint and its
        # exports are all accepted later
        model = ModelInfo(source or gait["sha256"], gait["path"], gait["arch"], gait["metric"],
                          gait.get("embedding", "embed_1"), source_sha256=source, inputs=inputs)
        tracks = result.videos[0].tracks
        usable = sorted((t for t in tracks.values() if t.embedding is not None
                         and t.n_silhouettes >= config.match.min_frames),
                        key=lambda t: (-t.n_silhouettes, t.track_id))
        if not usable:
            raise UserError(f"nobody to enrol: no track has {config.match.min_frames} usable silhouettes "
                            f"({count(len(tracks), 'track')} found)", args.video)
        stem = args.video.stem
        if name:
            chosen = [Enrolment(name, str(args.video), [usable[0]])]
            others = [t for t in tracks.values() if t is not usable[0]]
            if others:
                log.warning("%s: enrolled track %d (%s) as %s; %s left out: %s",
                            args.video, usable[0].track_id, count(usable[0].n_silhouettes, "silhouette"), name,
                            count(len(others), "other track"),
                            ", ".join(f"{t.track_id} ({count(t.n_silhouettes, 'silhouette')})" for t in others))
        else:
            chosen = [Enrolment(f"{clean_name(stem)}-G{t.track_id}", str(args.video), [t])
                      for t in sorted(usable, key=lambda t: t.track_id)]
        store = store or stack.enter_context(GalleryStore(db, create=True))
        # unnamed identities must be new: checked inside the enrol's transaction (two enrols at once cannot both pass)
        return store.add(chosen, model, new_names=not name)


@reports_user_errors
def enroll_command(argv: list[str]) -> int:
    args = _enroll_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        names = enroll(args)
    except KeyboardInterrupt as exc:
        from allinone.errors import interrupted_exit, interrupted_line
        print(interrupted_line(exc, "the gallery file is as it was"), file=sys.stderr)
        return interrupted_exit(exc)
    print(enrol_line(names, args.gallery_db))
    return 0


def enrol_line(done: list, db: Path) -> str:
    """What the enrol did, in words: new identities and their tracks, tracks added to existing ones."""
    new = [f"{d.name} ({count(d.tracks, 'track')})" for d in done if d.new]
    added = [f"added {count(d.added, 'track')} to {d.name} (now {count(d.tracks, 'track')})" for d in done if not d.new]
    return "; ".join(([f"enrolled {', '.join(new)}"] if new else []) + added) + f" in {db}"


@reports_user_errors
def gallery_command(argv: list[str]) -> int:
    from allinone.gallery.store import GalleryStore
    p = Parser(prog="python main.py gallery", description="Manage an enrolled gallery file.")
    db_help = f"the gallery file (default: {DEFAULT_DB}); before or after the action"
    p.add_argument("--gallery-db", type=Path, default=DEFAULT_DB, metavar="FILE", help=db_help)
    # the same option after the action: SUPPRESS leaves the value given before it (or the default) when absent
    after = Parser(add_help=False)
    after.add_argument("--gallery-db", type=Path, default=argparse.SUPPRESS, metavar="FILE", help=db_help)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the identities, their tracks and sources", parents=[after])
    r = sub.add_parser("rename", help="rename an identity", parents=[after])
    r.add_argument("old")
    r.add_argument("new")
    d = sub.add_parser("remove", help="remove an identity and its tracks", parents=[after])
    d.add_argument("name")
    e = sub.add_parser("export", help="write a folder: gallery.json, features (.npy), crops and GEIs (.png)",
                       parents=[after])
    e.add_argument("out", type=Path)
    b = sub.add_parser("backup", help="copy the file by SQLite's online backup (runs and enrols may go on)")
    b.add_argument("target", type=Path, metavar="FILE")
    sub.add_parser("check", help="SQLite's integrity check of the file, one line (exit code 1 when damaged)")
    args = p.parse_args(argv)
    if args.action == "check":  # also on a file too damaged to open as a store
        from allinone.gallery.sqlite_file import check
        line = check(args.gallery_db)
        if line.startswith("ok"):  # the pages are sound: are the features in them usable?
            with GalleryStore(args.gallery_db, readonly=True) as store:
                bad = store.bad_features()
            if bad:
                many = "+" if len(bad) >= 20 else ""
                line = f"damaged: {len(bad)}{many} {'track' if len(bad) == 1 else 'tracks'} with unusable " \
                       f"features, the first: {bad[0]}"
        print(f"{args.gallery_db}: {line}")
        return 0 if line.startswith("ok") else 1
    with GalleryStore(args.gallery_db, readonly=args.action in ("list", "export", "backup")) as store:
        if args.action == "list":
            store.verify()
            model = store.model()
            rows = store.listing()
            print(f"{args.gallery_db}: {count(len(rows), 'identity', 'identities')}"
                  + (f", features of {model.arch} ({Path(model.path).name}, {model.metric}, "
                     f"{model.embedding})" if model else ""))
            for row in rows:
                print(f"  {row['name']}\t{count(row['tracks'], 'track')}, "
                      f"{count(row['silhouettes'], 'silhouette')}, from {row['sources']}, "
                      f"enrolled {row['enrolled']}")
        elif args.action == "rename":
            store.rename(args.old, args.new)
            print(f"renamed {args.old} to {args.new}")
        elif args.action == "remove":
            store.remove(args.name)
            print(f"removed {args.name}")
        elif args.action == "backup":
            print(f"backed up {args.gallery_db} to {store.backup(args.target)}")
        else:
            print(store.export(args.out))
    return 0
