"""The review page and JSON API of the watch service, as one Starlette app (``make_app``).

    GET  /                              the page (static/: index.html, app.js, app.css)
    GET  /api/cameras                   each camera's state (live, reconnecting, waiting, ended; frames)
    GET  /api/sightings                 newest first; camera, person, since, until, status, limit, before_id
    GET  /api/sightings/{id}            one sighting
    GET  /api/media/{path}              a sighting's picture or clip, inside the output folder only
    GET  /api/people                    the gallery's people and the unknown ids, with their sightings' counts
    GET  /api/people/{name or U<n>}     one person's sightings in time order
    POST /api/enrol                     {"sighting_id": 7 | "unknown_id": "U3", "name": "..."}
    POST /api/people/{name}/rename      {"new": "..."}
    POST /api/people/{name}/remove

Errors are {"error": "..."} with a 4xx status: bad input is never a 500. Names and file names are data: the API
answers them as JSON strings, the page puts them in the document as text (textContent), and the
Content-Security-Policy (guard.py) allows no inline script, so a stored string can never run.

Starlette (routes, JSON, static files, its TestClient) rather than a larger framework: the API is ten routes over
two SQLite files, and Starlette has no dependencies of its own; uvicorn serves it (server.py). Endpoints are plain
functions, which Starlette runs in its thread pool: SQLite's calls block."""
from __future__ import annotations

import json
import logging
import mimetypes
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from allinone.errors import UserError
from allinone.watch.sightings import UNKNOWN_ID, Sighting, Sightings
from allinone.web import people as people_mod
from allinone.web.guard import Guard
from allinone.web.params import BadRequest, NotFound, positive_int, sighting_filter
from allinone.web.people import Conflict, EnrolPolicy

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
BODY_MAX = 64 * 1024  # a write's JSON is a name and an id
# what /api/media serves: pictures and clips, never the output folder's databases or events
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4",
               ".webm": "video/webm"}
CAMERA_STATES = ("live", "reconnecting", "waiting", "ended")  # waiting: not answered since the start

StateProvider = Callable[[], list[dict]]


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def media_url(path: str | None) -> str | None:
    return None if path is None else "/api/media/" + quote(path)


def sighting_json(s: Sighting) -> dict:
    """A sighting as the API answers it: its fields, times also in ISO 8601, media as URLs, no embedding."""
    return {"id": s.id, "camera": s.camera, "track": s.track, "first_wall": s.first_wall, "last_wall": s.last_wall,
            "first_time": _iso(s.first_wall), "last_time": _iso(s.last_wall), "first_frame": s.first_frame,
            "last_frame": s.last_frame, "status": s.status, "identity": s.identity, "unknown_id": s.unknown_id,
            "distance": s.distance, "threshold": s.threshold, "lr": s.lr, "verbal": s.verbal, "reason": s.reason,
            "n_silhouettes": s.n_silhouettes, "crop": media_url(s.crop), "gei": media_url(s.gei),
            "clip": media_url(s.clip), "runners_up": [{"name": n, "distance": d} for n, d in s.runners_up],
            "embedding": None if s.embedding is None else list(s.embedding.shape)}


def _camera(entry: dict) -> dict:
    """One camera of the service's state, in the API's words (the state callback's keys, checked)."""
    state = entry.get("state")
    return {"name": str(entry.get("name", "")), "state": state if state in CAMERA_STATES else "unknown",
            "frames_analysed": int(entry.get("frames_analysed", 0) or 0),
            "frames_dropped": int(entry.get("frames_dropped", 0) or 0)}


async def _body(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > BODY_MAX:
        raise BadRequest(f"the request's body is over {BODY_MAX} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request's body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request's body must be a JSON object")
    return body


def _error(status: int) -> Callable:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        message = exc.detail if isinstance(exc, HTTPException) else people_mod.said(exc) \
            if isinstance(exc, UserError) else str(exc)
        return JSONResponse({"error": message}, exc.status_code if isinstance(exc, HTTPException) else status)
    return handler


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"error": "internal error (see the service's log)"}, 500)


class Api:
    """The routes' state: the sightings database, the output folder, the gallery file, the cameras' state."""

    def __init__(self, sightings: Sightings, gallery: Path, state: StateProvider | None, policy: EnrolPolicy,
                 on_gallery_change: Callable[[], None] | None) -> None:
        self.sightings, self.gallery, self.state, self.policy = sightings, gallery, state, policy
        self.on_gallery_change = on_gallery_change
        # one write at a time: two clicks on "enrol" must not both pass the "still unknown" check and enrol twice
        self.writing = threading.Lock()

    def _changed(self) -> None:
        if self.on_gallery_change is not None:  # the running service reloads the gallery (its next decision)
            self.on_gallery_change()

    def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    def cameras(self, request: Request) -> Response:
        try:
            live = [_camera(c) for c in (self.state() if self.state else [])]
        except Exception:  # the service's state is a courtesy here: the stored cameras still answer
            log.warning("the cameras' state could not be read", exc_info=True)
            live = []
        stored = {c.camera: c for c in self.sightings.cameras()}
        names = [c["name"] for c in live] + sorted(set(stored) - {c["name"] for c in live})
        by = {c["name"]: c for c in live}
        out = []
        for name in names:
            c = by.get(name) or {"name": name, "state": "ended", "frames_analysed": 0, "frames_dropped": 0}
            s = stored.get(name)
            out.append({**c, "sightings": s.sightings if s else 0, "last_seen": s.last_wall if s else None})
        return JSONResponse({"cameras": out})

    def sightings_page(self, request: Request) -> Response:
        f = sighting_filter(request.query_params)
        page = self.sightings.page(f.camera, f.person, f.since, f.until, f.status, f.limit, f.before_id)
        more = page[-1].id if len(page) == f.limit else None
        return JSONResponse({"sightings": [sighting_json(s) for s in page], "next_before_id": more})

    def sighting(self, request: Request) -> Response:
        sid = positive_int(request.path_params["sighting_id"], "a sighting id")
        s = self.sightings.get(sid)
        if s is None:
            raise NotFound(f"no sighting {sid}")
        return JSONResponse(sighting_json(s))

    def media(self, request: Request) -> Response:
        rel = request.path_params["path"]
        parts = PurePosixPath(rel).parts
        if not rel or rel.startswith("/") or "\\" in rel or ".." in parts or any(p.startswith(".") for p in parts):
            raise BadRequest("a media path is relative to the output folder, without '..' or hidden files")
        kind = MEDIA_TYPES.get(PurePosixPath(rel).suffix.lower())
        if kind is None:
            raise NotFound("not a sighting's picture or clip")
        try:
            path = self.sightings.media(rel)  # resolved, links included, inside the output folder
        except ValueError:
            raise NotFound("not inside the output folder") from None
        if not path.is_file():
            raise NotFound("no such file (removed by retention?)")
        return FileResponse(path, media_type=kind, headers={"cache-control": "private, max-age=3600"})

    def people(self, request: Request) -> Response:
        return JSONResponse(people_mod.people(self.sightings, self.gallery))

    def person(self, request: Request) -> Response:
        key = request.path_params["name"]
        listed = self.sightings.person(key) if key.strip() else []
        in_gallery = not UNKNOWN_ID.fullmatch(key) and people_mod.in_gallery(self.gallery, key)
        if not listed and not in_gallery:
            raise NotFound(f"nobody called {key!r} in the gallery or the sightings")
        kind = "unknown" if UNKNOWN_ID.fullmatch(key) else "named"
        return JSONResponse({"person": key, "kind": kind, "in_gallery": in_gallery,
                             "sightings": [sighting_json(s) for s in listed]})

    async def enrol(self, request: Request) -> Response:
        body = await _body(request)
        sid = body.get("sighting_id")
        if sid is not None and (type(sid) is not int or sid < 1):
            raise BadRequest(f"sighting_id must be a whole number from 1, got {sid!r}")
        done = await _in_thread(self.writing, people_mod.enrol, self.sightings, self.gallery, self.policy,
                                body.get("name"), sid, body.get("unknown_id"))
        self._changed()
        return JSONResponse(done)

    async def rename(self, request: Request) -> Response:
        body = await _body(request)
        done = await _in_thread(self.writing, people_mod.rename, self.gallery, request.path_params["name"],
                                body.get("new"))
        self._changed()
        return JSONResponse(done)

    async def remove(self, request: Request) -> Response:
        done = await _in_thread(self.writing, people_mod.remove, self.gallery, request.path_params["name"])
        self._changed()
        return JSONResponse(done)


async def _in_thread(lock: threading.Lock, fn: Callable, *args):
    """A blocking write (SQLite, pictures) off the event loop, one at a time."""
    from starlette.concurrency import run_in_threadpool

    def locked():
        with lock:
            return fn(*args)
    return await run_in_threadpool(locked)


def _routes(api: Api) -> list:
    return [Route("/", api.index), Route("/api/cameras", api.cameras), Route("/api/sightings", api.sightings_page),
            Route("/api/sightings/{sighting_id}", api.sighting), Route("/api/media/{path:path}", api.media),
            Route("/api/people", api.people),
            Route("/api/people/{name:path}/rename", api.rename, methods=["POST"]),
            Route("/api/people/{name:path}/remove", api.remove, methods=["POST"]),
            Route("/api/people/{name:path}", api.person), Route("/api/enrol", api.enrol, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static")]


def make_app(sightings_path: str | Path, output_root: str | Path, gallery_path: str | Path, token: str = "",
             state_provider: StateProvider | None = None, *, policy: EnrolPolicy = EnrolPolicy(),
             on_gallery_change: Callable[[], None] | None = None) -> Starlette:
    """The page and API over the sightings database at ``sightings_path`` (media inside ``output_root``) and the
    gallery file at ``gallery_path``.

    token: "" for none (then the loopback only: guard.py); the server (server.py) refuses a non-loopback bind
    without one. state_provider: called per GET /api/cameras, a list of {"name", "state" (live, reconnecting,
    ended), "frames_analysed", "frames_dropped"}. policy: the service's gait model and the fewest silhouettes an
    enrolled sighting needs (people.py). on_gallery_change: called after each enrol, rename and remove, so that
    the running service decides with the new gallery from its next decision on."""
    sightings = Sightings(sightings_path, root=output_root)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            sightings.close()

    api = Api(sightings, Path(gallery_path), state_provider, policy, on_gallery_change)
    handlers = {BadRequest: _error(400), UserError: _error(400), NotFound: _error(404), Conflict: _error(409),
                HTTPException: _error(500), Exception: _unexpected}
    app = Starlette(routes=_routes(api), exception_handlers=handlers, lifespan=lifespan)
    app.add_middleware(Guard, token=token)
    app.state.token = token  # server.py's own check of the bind
    app.state.sightings = sightings
    return app


mimetypes.add_type("text/javascript", ".js")  # some systems map .js to text/plain, which nosniff then refuses

__all__ = ["StateProvider", "make_app", "media_url", "sighting_json"]
