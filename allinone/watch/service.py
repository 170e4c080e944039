"""The watch service: many cameras, one set of models, one gallery file; each track that ends is a sighting.

``python main.py watch CONFIG.yaml`` (watch/config.py) → a run spec with the cameras as live probes → the Runner
(runner/runner.py), whose LiveCameras are read in one loop. Two things are the service's own:
- sightings (watch/sightings.py): every track that ends with a decision is stored with its camera, wall times,
  decision, embedding, crop and GEI; an unknown one gets an unknown id (U17) shared with an earlier unknown sighting
  within the threshold that was not seen together with it;
- the cameras share who is held where (stages/cameras.py CrossCameras): one identity is never decided for two
  cameras that cannot see one person at the same moment (``overlaps`` in the config says which can).
Each start is a session: its segments, events and run.json in ``OUTPUT/sessions/<time>/``; the sightings database
and its pictures in ``OUTPUT/`` continue across sessions."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allinone.config import RunConfig
from allinone.errors import UserError
from allinone.records import Decision, DecisionEvent, TrackResult
from allinone.runner.runner import RunResult, Runner
from allinone.stages.cameras import CameraHooks, CrossCameras
from allinone.watch.clips import ClipRing
from allinone.watch.config import WatchConfig
from allinone.watch.sightings import Sighting, Sightings

log = logging.getLogger(__name__)

SESSIONS = "sessions"
MEDIA = "media"


def _write_picture(path: Path, img: np.ndarray) -> None:
    """Written beside and renamed into place: a reader (the review page) never sees half a picture."""
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ok, data = cv2.imencode(path.suffix, img)
    if not ok:
        raise OSError(f"cannot encode {path.name}")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


class SightingRecorder:
    """A camera's track that ended with a decision → one stored sighting (one transaction). Tracks too short to
    decide are not sightings (they are counted in the session's run.json)."""

    RETAIN_EVERY_S = 3600.0  # retention runs at the start and then hourly: days-long rules need no finer step

    def __init__(self, sightings: Sightings, root: Path, wcfg: WatchConfig) -> None:
        self.sightings, self.root, self.wcfg = sightings, root, wcfg
        self.threshold: float | None = None  # the session's and its metric, once the runner fixed them
        self.metric = "euc"
        self.added = 0
        self.retained_at = time.monotonic()
        self.clips = ClipRing()  # each camera's last frames as drawn: a sighting's clip is cut from them

    def ready(self, threshold, metric: str) -> None:
        """The session's threshold (an unknown sighting is linked to an earlier one within it) and metric."""
        self.threshold = float(threshold.value) if np.isfinite(threshold.value) else None
        self.metric = metric

    def retain(self) -> None:
        """Sightings older than retention_days deleted with their pictures and clips."""
        self.retained_at = time.monotonic()
        gone = self.sightings.retain(self.wcfg.retention_days)
        if gone:
            log.info("retention: %d sighting(s) older than %g days deleted with their pictures", gone,
                     self.wcfg.retention_days)

    def _media(self, camera: str, tr: TrackResult, walls: tuple[float, float]) -> tuple[str | None, ...]:
        """The sighting's crop, GEI and clip, written under OUTPUT/media; their paths (None where there is none)."""
        stem = f"{MEDIA}/{camera}/{time.strftime('%Y%m%d')}/{uuid.uuid4().hex[:12]}"
        clip = f"{stem}_clip.mp4"
        if not self.clips.write(camera, tr.first_frame, tr.last_frame, walls[1] - walls[0], self.root / clip):
            clip = None
        out = []
        for img, suffix in ((tr.crop, "_crop.jpg"), (tr.gei, "_gei.png")):
            if img is None:
                out.append(None)
                continue
            _write_picture(self.root / f"{stem}{suffix}", img)
            out.append(f"{stem}{suffix}")
        return out[0], out[1], clip

    def __call__(self, camera: str, tr: TrackResult, d: Decision, event: DecisionEvent | None,
                 walls: tuple[float, float]) -> None:
        if event is None or d.status == "too_short":
            return
        feature = tr.embedding.feature if tr.embedding is not None else None
        uid = None
        if d.status == "unknown" and feature is not None and self.threshold is not None:
            uid = self.sightings.unknown_id_for(feature, walls[0], walls[1], camera, self.threshold, self.metric,
                                                self.wcfg.may_see_together)
        crop, gei, clip = self._media(camera, tr, walls)
        s = Sighting(camera=camera, track=tr.track_id, first_wall=walls[0], last_wall=walls[1],
                     first_frame=tr.first_frame + 1, last_frame=tr.last_frame + 1, status=d.status,
                     identity=d.identity, unknown_id=uid, distance=d.distance, threshold=self.threshold, lr=event.lr,
                     verbal=event.lr_verbal, reason=d.reason, n_silhouettes=event.silhouettes or 0, crop=crop,
                     gei=gei, clip=clip, runners_up=tuple((n, float(x)) for n, x in d.ranking[:5]), embedding=feature)
        sid = self.sightings.add(s)
        self.added += 1
        if time.monotonic() - self.retained_at >= self.RETAIN_EVERY_S:
            self.retain()
        log.info("sighting %d: %s track %d, %s%s", sid, camera, tr.track_id, d.identity or "unknown",
                 f" ({uid})" if uid else "")


def _prepare(wcfg: WatchConfig):
    """Each camera's frames turned by its ``rotate``, and every ``frame_step``-th kept, before anything sees them."""
    def prepare(name: str, source) -> None:
        cam = wcfg.camera(name)
        source.set_rotation(cam.rotate)
        source.set_step(cam.frame_step)
    return prepare


def _ignores(wcfg: WatchConfig) -> dict:
    """Each camera with regions to ignore → which boxes to leave out: those whose feet (bottom centre) are inside."""
    def ignoring(cam):
        def mask(xyxy: np.ndarray) -> np.ndarray:
            return np.array([cam.ignores(float((x1 + x2) / 2), float(y2)) for x1, _, x2, y2 in xyxy], bool)
        return mask
    return {c.name: ignoring(c) for c in wcfg.cameras if c.ignore}


class LiveGallery:
    """The gallery as the running service decides with it: reloaded from the gallery file when the review page
    changes it (enrol, rename, remove), picked up by every camera at its next frame (CameraHooks.gallery)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version, self.identities = 0, None
        self._lock = threading.Lock()

    def changed(self) -> None:  # the web server's thread
        from allinone.gallery.store import GalleryStore
        with GalleryStore(self.path, readonly=True) as store:
            identities = store.identities()
        with self._lock:
            self.version, self.identities = self.version + 1, identities
        log.info("%s changed: %d identities from the next decision on", self.path, len(identities))

    def __call__(self) -> tuple[int, list | None]:  # each camera, each frame
        with self._lock:
            return self.version, self.identities


def _camera_states(wcfg: WatchConfig, hooks: CameraHooks):
    """The review page's camera list: each camera's state and frames (one not answering yet: "waiting")."""
    def states() -> list[dict]:
        made = {cam.info.name: cam.src for cam in list(hooks.cameras)}
        return [{"name": c.name, "state": made[c.name].state if c.name in made else "waiting",
                 "frames_analysed": made[c.name].count if c.name in made else 0,
                 "frames_dropped": made[c.name].dropped if c.name in made else 0} for c in wcfg.cameras]
    return states


def _serve_page(wcfg: WatchConfig, hooks: CameraHooks, gallery: LiveGallery, min_frames: int):
    """The review page and API on ``listen`` (web/), in a thread; its handle (``stop()``)."""
    from allinone.watch.config import listen_address
    from allinone.web.app import make_app
    from allinone.web.people import EnrolPolicy
    from allinone.web.server import serve_in_thread
    # the gallery's own model: the service refused to start with a gallery of another model (check_store)
    app = make_app(wcfg.sightings_path, wcfg.output, wcfg.gallery, wcfg.token, _camera_states(wcfg, hooks),
                   policy=EnrolPolicy(None, min_frames), on_gallery_change=gallery.changed)
    handle = serve_in_thread(app, *listen_address(wcfg.listen))
    log.info("review page: %s", handle.url)
    return handle


@dataclass(frozen=True)
class Engine:
    """Where the cameras' producers (decode, detect, track, silhouettes, embeddings) run: ``local``, in the watch
    loop's process; ``ray``, a Ray actor per camera on the cluster at ``address`` (None: a Ray started here on the
    loopback). Decisions, sightings, sinks and the page stay in this process either way. Checked on construction,
    before any model loads."""

    name: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.name not in ("local", "ray"):
            raise UserError(f"--engine must be local or ray, got {self.name!r}")
        if self.address is not None and self.name != "ray":
            raise UserError("--address names a Ray cluster: give it with --engine ray")
        if self.name == "ray":
            import importlib.util
            if importlib.util.find_spec("ray") is None:
                raise UserError("--engine ray needs the ray package (pip install ray)")


def watch(wcfg: WatchConfig, spec: RunConfig, serve: bool = True,
          engine: Engine = Engine()) -> tuple[RunResult, int]:
    """Run the service until every camera has ended, ``spec.live.duration_s`` or Ctrl-C / SIGTERM: one session
    folder in OUTPUT/sessions, the sightings in OUTPUT's database, the review page on ``listen`` (``serve``).
    Returns the session's result and the number of sightings it stored."""
    remote = None
    if engine.name == "ray":  # (ray itself is imported once the models have loaded, by the runner)
        from allinone.stages.ray_cameras import RayCameras
        remote = RayCameras(engine.address)
    # every camera opened and checked before the database or a model is touched (on a Ray cluster, by the nodes)
    runner = Runner(spec, remote=remote)
    root = Path(wcfg.output)
    root.mkdir(parents=True, exist_ok=True)
    with Sightings(wcfg.sightings_path, root=root) as sightings:
        recorder = SightingRecorder(sightings, root, wcfg)
        recorder.retain()  # at the start, then hourly as sightings are added
        gallery = LiveGallery(Path(wcfg.gallery))
        overlaps = frozenset(frozenset(p) for p in wcfg.overlaps)
        runner.hooks = hooks = CameraHooks(CrossCameras(overlaps), recorder, recorder.ready, recorder.clips.add,
                                           gallery, prepare=_prepare(wcfg), ignore=_ignores(wcfg))
        page = _serve_page(wcfg, hooks, gallery, spec.match.min_frames) if serve else None
        try:
            result = runner()
        finally:
            if page is not None:
                page.stop()
    return result, recorder.added


__all__ = ["Engine", "LiveGallery", "SightingRecorder", "watch"]
