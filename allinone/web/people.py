"""People on the review page: who the gallery and the sightings know, and enrolment from sightings.

Enrolling from a sighting is ``enroll`` with the sighting's stored embedding in place of a video's track: the same
checks (the gallery's model against the service's, the embedding's shape against the gallery's features, a usable
embedding of enough silhouettes, the name rule) and one transaction in the gallery file (GalleryStore.add). The
sightings of the unknown id are then named (Sightings.rename_unknown): naming one sighting names the person its
unknown id links, while only the chosen sightings' embeddings join the gallery. The two files are two
transactions; everything that could refuse the second is checked before the first."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from allinone.decide.identities import check_name as gallery_name
from allinone.errors import UserError
from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
from allinone.records import Embedding, TrackResult
from allinone.watch.sightings import ANY_NAMED, ANY_UNKNOWN, UNKNOWN_ID, Sighting, Sightings
from allinone.web.params import BadRequest, NotFound, check_name

log = logging.getLogger(__name__)


class Conflict(RuntimeError):
    """A request the API answers 409: it is well formed but the state refuses it (another model's gallery)."""


@dataclass(frozen=True)
class EnrolPolicy:
    """What a sighting needs to join the gallery: the service's gait model (None: the gallery's own, which an
    empty gallery lacks) and the fewest silhouettes an enrolled embedding may come from."""

    model: ModelInfo | None = None
    min_frames: int = 1


def said(exc: UserError) -> str:
    """A UserError's message without the file it names: the server's paths are not the browser's business."""
    text = str(exc)
    return text[len(exc.path) + 2:] if exc.path and text.startswith(f"{exc.path}: ") else text


def people(sightings: Sightings, gallery: Path) -> dict:
    """The gallery's people (with their sightings' counts) and the unknown ids not named yet."""
    seen = {(kind, key): (n, last) for kind, key, n, last in sightings.people()}
    named = []
    if gallery.is_file():
        with GalleryStore(gallery, readonly=True) as store:
            for row in store.listing():
                n, last = seen.get(("named", row["name"]), (0, None))
                named.append({"name": row["name"], "tracks": row["tracks"], "enrolled": row["enrolled"],
                              "sightings": n, "last_seen": last, "in_gallery": True})
    listed = {p["name"] for p in named}
    # names the sightings carry that the gallery no longer has (renamed or removed since): still their history
    named += [{"name": key, "tracks": 0, "enrolled": None, "sightings": n, "last_seen": last, "in_gallery": False}
              for (kind, key), (n, last) in seen.items() if kind == "named" and key not in listed]
    unknown = [{"id": key, "sightings": n, "last_seen": last} for (kind, key), (n, last) in seen.items()
               if kind == "unknown"]
    return {"named": named, "unknown": unknown}


def in_gallery(gallery: Path, name: str) -> bool:
    if not gallery.is_file():
        return False
    with GalleryStore(gallery, readonly=True) as store:
        return name in store.names()


def new_name(name) -> str:
    """A name a person may be given here: the API's length, the gallery's rule, and no filter word."""
    name = check_name(name)
    try:
        name = gallery_name(name, "name")
    except UserError as exc:
        raise BadRequest(said(exc)) from None
    if name in (ANY_UNKNOWN, ANY_NAMED) or UNKNOWN_ID.fullmatch(name):
        raise BadRequest(f"{name!r} cannot name a person: it is a filter word (unknown, named, U<n>)")
    return name


def _chosen(sightings: Sightings, sighting_id: int | None, unknown_id: str | None) -> list[Sighting]:
    """The sightings to enrol, with embeddings: one sighting, or every sighting of an unknown id."""
    if (sighting_id is None) == (unknown_id is None):
        raise BadRequest("give either sighting_id or unknown_id")
    if sighting_id is not None:
        s = sightings.get(sighting_id)
        if s is None:
            raise NotFound(f"no sighting {sighting_id}")
        if s.status != "unknown" or s.identity is not None:
            raise Conflict(f"sighting {sighting_id} is not an unknown one (it is {s.identity or s.status})")
        return [s]
    if not isinstance(unknown_id, str) or not UNKNOWN_ID.fullmatch(unknown_id):
        raise BadRequest(f"unknown_id must be U<n>, got {unknown_id!r}")
    listed = [s for s in sightings.person(unknown_id) if s.identity is None]
    if not listed:
        raise NotFound(f"no unnamed sighting of {unknown_id}")
    return [s for s in (sightings.get(s.id) for s in listed) if s is not None]


def _picture(sightings: Sightings, path: str | None, gray: bool) -> np.ndarray | None:
    """A sighting's crop (BGR) or GEI (64x64 gray) for the gallery's pictures; None when missing or odd."""
    if path is None:
        return None
    try:
        img = cv2.imread(str(sightings.media(path)), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    except ValueError:
        return None
    if img is None or (gray and img.shape != (64, 64)):
        return None
    return img


def _track(sightings: Sightings, s: Sighting) -> TrackResult:
    first, last = max(s.first_frame - 1, 0), max(s.last_frame - 1, 0)  # stored 1-based, the gallery's 0-based
    emb = Embedding(f"sighting-{s.id}", s.track, s.embedding, s.n_silhouettes, first, last)
    return TrackResult(s.track, first, last, last - first + 1, s.n_silhouettes, embedding=emb,
                       crop=_picture(sightings, s.crop, False), gei=_picture(sightings, s.gei, True))


def _usable(chosen: list[Sighting], policy: EnrolPolicy) -> list[Sighting]:
    usable = [s for s in chosen if s.embedding is not None and s.n_silhouettes >= policy.min_frames]
    if not usable:
        raise BadRequest(f"nothing to enrol: no chosen sighting has an embedding of {policy.min_frames} or more "
                         "silhouettes")
    shapes = {s.embedding.shape for s in usable}
    if len(shapes) > 1:
        raise Conflict(f"the sightings' embeddings differ in shape ({sorted(shapes)}): another model's sightings")
    return usable


def _check_store(store: GalleryStore, policy: EnrolPolicy, shape: tuple[int, int]) -> ModelInfo:
    """The model the enrolment is recorded under, after the checks ``enroll`` makes (UserError → 409)."""
    model = policy.model or store.model()
    if model is None:
        raise Conflict("the gallery holds no features yet and the service did not say which model made the "
                       "sightings': enrol one person with python main.py enroll first")
    try:
        store.check_model(model)
    except UserError as exc:
        raise Conflict(said(exc)) from None
    for _, _, _, features in store.rows(chunk=1):  # the first stored feature: all of a gallery's share a shape
        if features.shape[1:] != shape:
            raise Conflict(f"the sightings' embeddings are {list(shape)}, the gallery's features "
                           f"{list(features.shape[1:])}: another model")
        break
    return model


def enrol(sightings: Sightings, gallery: Path, policy: EnrolPolicy, name, sighting_id: int | None = None,
          unknown_id: str | None = None) -> dict:
    """Add the chosen sightings' embeddings to the gallery as ``name`` (one transaction), then name their
    unknown id's sightings. What it did, for the API's answer."""
    name = new_name(name)
    usable = _usable(_chosen(sightings, sighting_id, unknown_id), policy)
    tracks = [(s, _track(sightings, s)) for s in usable]
    with GalleryStore(gallery, create=True) as store:
        model = _check_store(store, policy, usable[0].embedding.shape)
        try:
            done = store.add([Enrolment(name, f"sighting {s.id} on {s.camera}", [t]) for s, t in tracks], model)
        except UserError as exc:  # the name rule or the model again, now inside the transaction
            raise Conflict(said(exc)) from None
    named = 0
    for uid in sorted({s.unknown_id for s in usable if s.unknown_id}):
        named += sightings.rename_unknown(uid, name)
    log.info("enrolled %d sighting(s) as %r; %d sighting(s) named", len(usable), name, named)
    return {"name": name, "enrolled": [s.id for s in usable], "tracks": done[-1].tracks if done else 0,
            "new": bool(done and done[0].new), "sightings_named": named}


def rename(gallery: Path, old: str, new) -> dict:
    """Rename a gallery person (the sightings keep the name they were decided or named with: their history)."""
    new = new_name(new)
    with _writable(gallery) as store:
        if old not in store.names():
            raise NotFound(f"no person named {old!r} in the gallery")
        try:
            store.rename(old, new)
        except UserError as exc:
            raise Conflict(said(exc)) from None
    return {"renamed": old, "to": new}


def remove(gallery: Path, name: str) -> dict:
    """Remove a gallery person and their features (their sightings stay, as history)."""
    with _writable(gallery) as store:
        if name not in store.names():
            raise NotFound(f"no person named {name!r} in the gallery")
        store.remove(name)
    return {"removed": name}


def _writable(gallery: Path) -> GalleryStore:
    if not gallery.is_file():
        raise NotFound("the gallery file holds nobody yet")
    return GalleryStore(gallery)


__all__ = ["Conflict", "EnrolPolicy", "enrol", "in_gallery", "new_name", "people", "remove", "rename", "said"]
