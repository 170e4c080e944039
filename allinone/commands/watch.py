"""python main.py watch CONFIG.yaml [model flags] [--duration S] [--engine ray [--address HOST:PORT]]: the camera
service (watch/service.py)."""
from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from allinone.commands.args import Parser, add_model_args, add_window_arg, nonnegative_float
from allinone.config import LiveConfig, RunConfig
from allinone.errors import interrupted_exit, interrupted_line, reports_user_errors
from allinone.results.words import count

log = logging.getLogger(__name__)


def watch_parser() -> Parser:
    p = Parser(prog="python main.py watch",
               description="Watch many cameras with one set of models and one gallery file; every track that ends "
                           "is a sighting in OUTPUT/sightings.db (config keys: the documentation's watch page).")
    p.add_argument("config", type=Path, metavar="CONFIG.yaml", help="the service's config file")
    p.add_argument("--duration", type=nonnegative_float, default=0.0, metavar="S",
                   help="stop after S seconds (default: when every camera has ended, or Ctrl-C / SIGTERM)")
    p.add_argument("--listen", default=None, metavar="HOST:PORT",
                   help="where the review page and API are served (default: the config's listen, else "
                        "127.0.0.1:8090); any address but the loopback needs a token")
    p.add_argument("--token", default=None, metavar="SECRET",
                   help="the secret every request to the page and API must carry (default: the config's token)")
    p.add_argument("--reconnect", type=nonnegative_float, default=LiveConfig().reconnect_s, metavar="S",
                   help=f"keep reconnecting a dropped camera for S seconds (default {LiveConfig().reconnect_s:g})")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where each camera is decoded and its models run: in this process (local, the default), or "
                        "in a Ray actor per camera on a cluster's nodes (ray); decisions, sightings, sinks and the "
                        "page stay here")
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster for --engine ray (default: start Ray on the loopback here)")
    add_window_arg(p)
    add_model_args(p)
    return p


def watch_spec(args, wcfg) -> RunConfig:
    """The service's run spec: the cameras as live probes under their names, the gallery file, the config's
    threshold settings and sinks, the command line's models; sessions in OUTPUT/sessions."""
    from allinone.commands.args import spec_from_args
    from allinone.watch.service import SESSIONS
    spec = spec_from_args(args, gallery=None, probes=tuple(c.spec for c in wcfg.cameras),
                          output=Path(wcfg.output) / SESSIONS, gallery_db=Path(wcfg.gallery))
    # a camera that does not answer at the start is retried while the others run
    return replace(spec, match=replace(wcfg.match, min_frames=spec.match.min_frames), outputs=wcfg.outputs,
                   camera_names=tuple(c.name for c in wcfg.cameras),
                   live=replace(spec.live, retry_unanswered=True))


def hold_freed_memory() -> bool:
    """Keep the memory this process frees for its own reuse (glibc: no chunk served by mmap, and the heap's free
    top kept up to 1 GiB): each gait forward allocates and frees ~55 MB of activations, which glibc otherwise hands
    back to the system and asks for again, so the service's RSS swung by that much with every forward. With it the
    RSS stays at its high-water mark. A process-wide policy, so set by the command, not by ``watch()`` (a library
    call must not change its host's allocator). False where the C library is not glibc (nothing changed)."""
    import ctypes
    import ctypes.util
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's mallopt parameters (malloc.h)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


@reports_user_errors
def watch_command(argv: list[str]) -> int:
    from allinone.watch.config import load_watch_config
    from allinone.watch.service import Engine, watch
    args = watch_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    engine = Engine(args.engine, args.address)  # one line (ray missing, --address alone) before any model loads
    overrides = {k: v for k, v in (("listen", args.listen), ("token", args.token)) if v is not None}
    wcfg = load_watch_config(args.config, overrides)  # one line naming the key, before any model loads
    hold_freed_memory()  # before the models and the camera threads allocate
    try:
        result, added = watch(wcfg, watch_spec(args, wcfg), engine=engine)
    except KeyboardInterrupt as exc:  # a second Ctrl-C while finishing
        print(interrupted_line(exc, "the sightings stored so far are kept"), file=sys.stderr)
        return interrupted_exit(exc)
    print(f"{count(added, 'sighting')} stored in {wcfg.sightings_path}; session {result.run_dir}")
    return 0
