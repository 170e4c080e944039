"""A synthetic watch output for the review page's tests: a sightings database with real pictures, and a gallery
file with one person enrolled (no model runs: small random embeddings)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from allinone.gallery.store import Enrolment, GalleryStore, ModelInfo
from allinone.records import Embedding, TrackResult
from allinone.watch.sightings import Sighting, Sightings


T0 = 1_700_000_000.0
SHAPE = (16, 4)
MODEL = ModelInfo("ab" * 32, "GaitBase.pt", "GaitBase", "euc")
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)><b>bold</b>"


def feature(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def pictures(root: Path, stem: str, seed: int) -> tuple[str, str]:
    """A crop (JPEG, a coloured figure) and a GEI (64x64 PNG) written under root/media/; their relative paths."""
    rng = np.random.default_rng(seed)
    crop = np.full((96, 48, 3), 235, np.uint8)
    colour = tuple(int(c) for c in rng.integers(40, 200, 3))
    cv2.ellipse(crop, (24, 18), (9, 11), 0, 0, 360, colour, -1)
    cv2.rectangle(crop, (12, 30), (36, 90), colour, -1)
    gei = np.zeros((64, 64), np.uint8)
    cv2.ellipse(gei, (32, 32), (10, 28), 0, 0, 360, 200, -1)
    rel_crop, rel_gei = f"media/{stem}_crop.jpg", f"media/{stem}_gei.png"
    (root / "media").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / rel_crop), crop)
    cv2.imwrite(str(root / rel_gei), gei)
    return rel_crop, rel_gei


def clip(root: Path, stem: str) -> str:
    """A real two-second H.264 clip, written as the service writes one (watch/clips.py's sink)."""
    from allinone.io.video import VideoSink
    rel = f"media/{stem}_clip.mp4"
    with VideoSink(root / rel, 10.0, (96, 64), encoder="libx264") as sink:
        for i in range(20):
            frame = np.full((64, 96, 3), 40, np.uint8)
            cv2.rectangle(frame, (4 * i, 10), (4 * i + 12, 54), (60, 180, 240), -1)
            sink.write(frame)
    return rel


def unknown(camera: str, track: int, t: float, uid: str, seed: int, root: Path, **kw) -> Sighting:
    crop, gei = pictures(root, f"{camera}_{track}", seed)
    return Sighting(camera, track, t, t + 4, 10, 60, "unknown", unknown_id=uid, distance=0.9, threshold=0.5,
                    reason="no_candidate", n_silhouettes=40, crop=crop, gei=gei,
                    runners_up=(("Alice", 0.9), ("Bob", 1.2)), embedding=feature(seed), **kw)


def match(camera: str, track: int, t: float, name: str, seed: int, root: Path) -> Sighting:
    crop, gei = pictures(root, f"{camera}_{track}", seed)
    return Sighting(camera, track, t, t + 4, 10, 60, "match", identity=name, distance=0.2, threshold=0.5, lr=1200.0,
                    verbal="strong support", n_silhouettes=40, crop=crop, gei=gei,
                    runners_up=((name, 0.2), ("Bob", 1.1)), embedding=feature(seed))


def pytest_configure(config) -> None:
    # Starlette's TestClient on httpx warns that it will move to httpx2: not this project's concern
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


@dataclass(frozen=True)
class World:
    out: Path
    db: Path
    gallery: Path
    ids: dict  # what each sighting is: alice, u1_door, u1_hall, u2, hostile


def make_gallery(path: Path) -> None:
    emb = Embedding("alice.mp4", 1, feature(100), 40, 0, 50)
    track = TrackResult(1, 0, 50, 51, 40, embedding=emb)
    with GalleryStore(path, create=True) as store:
        store.add([Enrolment("Alice", "alice.mp4", [track])], MODEL)


@pytest.fixture
def world(tmp_path: Path) -> World:
    out = tmp_path / "out"
    out.mkdir()
    gallery = tmp_path / "gallery.sqlite"
    make_gallery(gallery)
    db = out / "sightings.db"
    with Sightings(db, root=out) as s:
        ids = dict(zip(("alice", "u1_door", "u1_hall", "u2", "hostile"), s.add_many([
            match("hall", 1, T0, "Alice", 1, out),
            unknown("door", 2, T0 + 60, "U1", 2, out),
            unknown("hall", 3, T0 + 120, "U1", 3, out, clip=clip(out, "hall_3")),
            unknown("door", 4, T0 + 180, "U2", 4, out),
            match("door", 5, T0 + 240, HOSTILE, 5, out)])))
    return World(out, db, gallery, ids)


CAMERAS = [{"name": "hall", "state": "live", "frames_analysed": 1200, "frames_dropped": 3},
           {"name": "door", "state": "reconnecting", "frames_analysed": 800, "frames_dropped": 0}]


@pytest.fixture
def client(world: World):
    from starlette.testclient import TestClient

    from allinone.web.app import make_app
    from allinone.web.people import EnrolPolicy
    app = make_app(world.db, world.out, world.gallery, "", lambda: CAMERAS, policy=EnrolPolicy(MODEL, 10))
    with TestClient(app, base_url="http://127.0.0.1:8090") as c:
        yield c
