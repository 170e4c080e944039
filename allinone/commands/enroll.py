"""python main.py enroll VIDEO [--name NAME] [--gallery-db FILE], and python main.py gallery ... (manage the file).

A named video is one person: its longest usable track (most silhouettes) is enrolled under the name and the other
tracks are reported. An unnamed video gives one identity per usable track, named ``<video stem>-G<track id>``.
The video is processed in a temporary folder that is removed afterwards; only the gallery file changes, in one
transaction, after every model has run.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import replace
import sys
import tempfile
from pathlib import Path

from allinone.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_DB = Path("gallery.sqlite")


def _enroll_parser() -> argparse.ArgumentParser:
    from allinone.commands.args import add_model_args
    p = argparse.ArgumentParser(prog="python main.py enroll",
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


def enroll(args: argparse.Namespace) -> list[str]:
    from allinone.commands.args import config_from_args
    from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
    from allinone.io.run_folder import sha256_path
    from allinone.commands.run import run
    from allinone.io.video import VideoSource

    VideoSource(args.video)  # a bad video is refused before any model loads
    if args.name is not None and not args.name.strip():
        raise UserError("--name is empty")
    with GalleryStore(args.gallery_db, create=True) as store, \
            tempfile.TemporaryDirectory(prefix="allinone-enrol-") as tmp:
        existing = set(store.names())
        ns = argparse.Namespace(**{**vars(args), "gallery": args.video, "probe": [], "output": Path(tmp),
                                   "name": "enrol", "gallery_db": None, "threshold": 0.0})
        config = replace(config_from_args(ns), render=False, save_silhouettes="none")
        source = ""
        if config.gait.model and Path(config.gait.model).is_file():  # refuse a foreign model before running any
            if Path(config.gait.model).suffix.lower() == ".onnx":
                from allinone.gait.onnx import source_sha256
                source = source_sha256(config.gait.model)
            store.check_model(ModelInfo(sha256_path(config.gait.model), config.gait.model, "", "", source))
        result = run(config)
        gait = result.manifest["weights"]["gait"]
        # an export that names its checkpoint enrols under the checkpoint's sha256, so that the checkpoint and its
        # exports are all accepted later
        model = ModelInfo(source or gait["sha256"], gait["path"], gait["arch"], gait["metric"], source)
        tracks = result.videos[0].tracks
        usable = sorted((t for t in tracks.values() if t.embedding is not None
                         and t.n_silhouettes >= config.match.min_frames),
                        key=lambda t: (-t.n_silhouettes, t.track_id))
        if not usable:
            raise UserError(f"nobody to enrol: no track has {config.match.min_frames} usable silhouettes "
                            f"({len(tracks)} track(s) found)", args.video)
        stem = args.video.stem
        if args.name:
            chosen = [Enrolment(args.name.strip(), str(args.video), [usable[0]])]
            others = [t for t in tracks.values() if t is not usable[0]]
            if others:
                log.warning("%s: enrolled track %d (%d silhouettes) as %s; %d other track(s) left out: %s",
                            args.video, usable[0].track_id, usable[0].n_silhouettes, args.name, len(others),
                            ", ".join(f"{t.track_id} ({t.n_silhouettes} silhouettes)" for t in others))
        else:
            chosen = [Enrolment(f"{stem}-G{t.track_id}", str(args.video), [t])
                      for t in sorted(usable, key=lambda t: t.track_id)]
            clash = [e.name for e in chosen if e.name in existing]
            if clash:
                raise UserError(f"identities named {', '.join(clash)} exist already in the gallery file (enrol the "
                                "video under --name, or rename or remove them first)", args.gallery_db)
        return store.add(chosen, model)


def enroll_command(argv: list[str]) -> int:
    args = _enroll_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        names = enroll(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the gallery file is as it was", file=sys.stderr)
        return 130
    print(f"enrolled {', '.join(names)} in {args.gallery_db}")
    return 0


def gallery_command(argv: list[str]) -> int:
    from allinone.gallery.store import GalleryStore
    p = argparse.ArgumentParser(prog="python main.py gallery", description="Manage an enrolled gallery file.")
    db_help = f"the gallery file (default: {DEFAULT_DB}); before or after the action"
    p.add_argument("--gallery-db", type=Path, default=DEFAULT_DB, metavar="FILE", help=db_help)
    # the same option after the action: SUPPRESS leaves the value given before it (or the default) when absent
    after = argparse.ArgumentParser(add_help=False)
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
    args = p.parse_args(argv)
    try:
        with GalleryStore(args.gallery_db) as store:
            if args.action == "list":
                model = store.model()
                rows = store.listing()
                print(f"{args.gallery_db}: {len(rows)} identities"
                      + (f", features of {model.arch} ({Path(model.path).name}, {model.metric})" if model else ""))
                for row in rows:
                    print(f"  {row['name']}\t{row['tracks']} track(s), {row['silhouettes']} silhouettes, from "
                          f"{row['sources']}, enrolled {row['enrolled']}")
            elif args.action == "rename":
                store.rename(args.old, args.new)
                print(f"renamed {args.old} to {args.new}")
            elif args.action == "remove":
                store.remove(args.name)
                print(f"removed {args.name}")
            else:
                print(store.export(args.out))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
