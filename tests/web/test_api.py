"""The review API route by route (Starlette's TestClient): answers, filters, paging, and every 4xx case; bad input
is never a 500."""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from allinone.gallery.store import GalleryStore, ModelInfo
from allinone.watch.sightings import Sightings
from allinone.web.guard import CSP
from tests.web.conftest import HOSTILE, T0, unknown


def _error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]


def _gallery(world) -> dict:
    with GalleryStore(world.gallery, readonly=True) as store:
        return {r["name"]: r["tracks"] for r in store.listing()}


# --- reading ---------------------------------------------------------------------------------------------------


def test_cameras_join_the_services_state_and_the_stored_counts(client):
    cams = client.get("/api/cameras").json()["cameras"]
    assert [(c["name"], c["state"], c["frames_analysed"], c["frames_dropped"], c["sightings"]) for c in cams] == \
        [("hall", "live", 1200, 3, 2), ("door", "reconnecting", 800, 0, 3)]


def test_a_camera_only_in_the_database_shows_ended(world):
    from starlette.testclient import TestClient

    from allinone.web.app import make_app
    app = make_app(world.db, world.out, world.gallery, "", lambda: [{"name": "hall", "state": "live"}])
    with TestClient(app, base_url="http://127.0.0.1:8090") as c:
        cams = {x["name"]: x["state"] for x in c.get("/api/cameras").json()["cameras"]}
    assert cams == {"hall": "live", "door": "ended"}


def test_sightings_newest_first_with_each_filter(client, world):
    def ids(**q):
        r = client.get("/api/sightings", params=q)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()["sightings"]]

    i = world.ids
    assert ids() == [5, 4, 3, 2, 1]
    assert ids(camera="hall") == [i["u1_hall"], i["alice"]]
    assert ids(person="U1") == [i["u1_hall"], i["u1_door"]]
    assert ids(person="Alice") == [i["alice"]]
    assert ids(person=HOSTILE) == [i["hostile"]]
    assert ids(person="unknown") == [4, 3, 2]
    assert ids(person="named") == [5, 1]
    assert ids(status="match") == [5, 1]
    assert ids(since=str(T0 + 100), until=str(T0 + 190)) == [4, 3]
    assert ids(since="2023-11-14T22:15:00Z", until="2023-11-14T22:16:00+00:00") == [3]
    assert ids(until="2023-11-14T22:13:30") == [1]  # no zone: UTC
    assert ids(camera="", person="", status="") == [5, 4, 3, 2, 1]  # an empty form field: any
    assert ids(camera="nowhere") == []


def test_paging_by_before_id(client):
    first = client.get("/api/sightings", params={"limit": 2}).json()
    assert [s["id"] for s in first["sightings"]] == [5, 4] and first["next_before_id"] == 4
    second = client.get("/api/sightings", params={"limit": 2, "before_id": 4}).json()
    assert [s["id"] for s in second["sightings"]] == [3, 2] and second["next_before_id"] == 2
    last = client.get("/api/sightings", params={"limit": 2, "before_id": 2}).json()
    assert [s["id"] for s in last["sightings"]] == [1] and last["next_before_id"] is None


@pytest.mark.parametrize("query, says", [
    ({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"before_id": "0"}, "before_id"), ({"before_id": "-3"}, "before_id"), ({"status": "maybe"}, "status"),
    ({"since": "yesterday"}, "since"), ({"until": "2023-13-45"}, "until"), ({"since": "nan"}, "since"),
    ({"since": "-5"}, "since"), ({"since": str(T0 + 10), "until": str(T0)}, "ends before it starts"),
    ({"camera": "../etc"}, "camera"), ({"person": "x" * 101}, "100 characters"), ({"persn": "U1"}, "unknown "
                                                                                 "parameter")])
def test_bad_filters_are_400(client, query, says):
    assert says in _error(client.get("/api/sightings", params=query), 400)


def test_one_sighting_and_its_4xx(client, world):
    s = client.get(f"/api/sightings/{world.ids['alice']}").json()
    assert (s["identity"], s["distance"], s["threshold"], s["lr"], s["verbal"]) == \
        ("Alice", 0.2, 0.5, 1200.0, "strong support")
    assert s["runners_up"] == [{"name": "Alice", "distance": 0.2}, {"name": "Bob", "distance": 1.1}]
    assert s["embedding"] == [16, 4] and s["clip"] is None  # the shape, never the numbers
    assert s["crop"].startswith("/api/media/media/") and s["first_time"] == "2023-11-14T22:13:20+00:00"
    assert "no sighting 999" in _error(client.get("/api/sightings/999"), 404)
    _error(client.get("/api/sightings/abc"), 400)
    _error(client.get("/api/sightings/0"), 400)
    _error(client.get("/api/nothing"), 404)


def test_media_inside_the_output_folder_only(client, world, tmp_path):
    crop = client.get(client.get("/api/sightings/1").json()["crop"])
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg" and crop.content[:2] == b"\xff\xd8"
    gei = client.get(client.get("/api/sightings/1").json()["gei"])
    assert gei.headers["content-type"] == "image/png" and gei.content[:4] == b"\x89PNG"
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    os.symlink(tmp_path / "secret.png", world.out / "media" / "link.png")
    (world.out / "media" / ".half.png").write_bytes(b"x")
    for path in ("../secret.png", "media/../../secret.png", "%2e%2e/secret.png", "media/%2e%2e/%2e%2e/secret.png",
                 "/etc/passwd", "%2Fetc%2Fpasswd", "media\\..\\x.png", "media/.half.png"):
        r = client.get("/api/media/" + path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert b"secret" not in r.content
    assert "output folder" in _error(client.get("/api/media/media/link.png"), 404)  # a link out of it
    _error(client.get("/api/media/sightings.db"), 404)  # not a picture or clip: the database stays private
    _error(client.get("/api/media/media/none.jpg"), 404)


def test_people_lists_the_gallery_and_the_unknown_ids(client):
    people = client.get("/api/people").json()
    named = {p["name"]: (p["in_gallery"], p["sightings"], p["tracks"]) for p in people["named"]}
    assert named == {"Alice": (True, 1, 1), HOSTILE: (False, 1, 0)}
    assert {p["id"]: p["sightings"] for p in people["unknown"]} == {"U1": 2, "U2": 1}


def test_a_persons_sightings_in_time_order(client, world):
    from urllib.parse import quote
    u1 = client.get("/api/people/U1").json()
    assert (u1["kind"], u1["in_gallery"]) == ("unknown", False)
    assert [s["id"] for s in u1["sightings"]] == [world.ids["u1_door"], world.ids["u1_hall"]]
    assert [s["camera"] for s in u1["sightings"]] == ["door", "hall"]
    hostile = client.get("/api/people/" + quote(HOSTILE, safe="")).json()
    assert hostile["person"] == HOSTILE and hostile["sightings"][0]["identity"] == HOSTILE
    assert client.get("/api/people/Alice").json()["in_gallery"] is True
    assert "nobody called" in _error(client.get("/api/people/Nobody"), 404)
    _error(client.get("/api/people/U99"), 404)


# --- writing ---------------------------------------------------------------------------------------------------


def test_enrol_one_sighting_names_its_unknown_id(client, world):
    r = client.post("/api/enrol", json={"sighting_id": world.ids["u1_door"], "name": "Carol"})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "Carol", "enrolled": [world.ids["u1_door"]], "tracks": 1, "new": True,
                        "sightings_named": 2}
    assert _gallery(world) == {"Alice": 1, "Carol": 1}
    carol = client.get("/api/people/Carol").json()
    assert carol["in_gallery"] and [s["unknown_id"] for s in carol["sightings"]] == ["U1", "U1"]
    assert [s["id"] for s in client.get("/api/sightings", params={"person": "unknown"}).json()["sightings"]] == [4]
    with GalleryStore(world.gallery, readonly=True) as store:  # the sighting's pictures went with it
        (tid,) = [i.members[0].track_id for i in store.identities() if i.name == "Carol"]
        crop, gei = store.pictures([tid])[tid]
    assert crop[:4] == b"\x89PNG" and gei[:4] == b"\x89PNG"
    # the sighting is named now: not enrolled twice
    assert "not an unknown one" in _error(client.post("/api/enrol", json={"sighting_id": 2, "name": "Carol"}), 409)


def test_enrol_every_sighting_of_an_unknown_id(client, world):
    r = client.post("/api/enrol", json={"unknown_id": "U1", "name": "Dave"})
    assert r.status_code == 200 and r.json()["enrolled"] == [world.ids["u1_door"], world.ids["u1_hall"]]
    assert _gallery(world) == {"Alice": 1, "Dave": 2}
    # an existing person gains the sightings
    r = client.post("/api/enrol", json={"unknown_id": "U2", "name": "Alice"})
    assert r.status_code == 200 and r.json()["new"] is False and _gallery(world) == {"Alice": 2, "Dave": 2}


@pytest.mark.parametrize("body, status, says", [
    ({"sighting_id": 2}, 400, "name"), ({"sighting_id": 2, "name": "  "}, 400, "name"),
    ({"sighting_id": 2, "name": "x" * 101}, 400, "100 characters"), ({"sighting_id": 2, "name": 5}, 400, "name"),
    ({"sighting_id": 2, "name": "a:b"}, 400, "may not contain"), ({"sighting_id": 2, "name": "unknown"}, 400,
                                                                  "filter word"),
    ({"sighting_id": 2, "name": "U7"}, 400, "filter word"), ({"name": "Carol"}, 400, "either"),
    ({"sighting_id": 2, "unknown_id": "U1", "name": "Carol"}, 400, "either"),
    ({"sighting_id": "2", "name": "Carol"}, 400, "sighting_id"), ({"sighting_id": 999, "name": "Carol"}, 404, "999"),
    ({"sighting_id": 1, "name": "Carol"}, 409, "not an unknown one"), ({"unknown_id": "X1", "name": "Carol"}, 400,
                                                                       "U<n>"),
    ({"unknown_id": "U99", "name": "Carol"}, 404, "U99")])
def test_enrol_refusals(client, world, body, status, says):
    assert says in _error(client.post("/api/enrol", json=body), status)
    assert _gallery(world) == {"Alice": 1}


def test_enrol_refuses_a_body_that_is_not_a_json_object(client):
    _error(client.post("/api/enrol", content=b"{not json"), 400)
    _error(client.post("/api/enrol", json=[1, 2]), 400)
    _error(client.post("/api/enrol", content=b"x" * 70_000), 400)


def _app_client(world, **kw):
    from starlette.testclient import TestClient

    from allinone.web.app import make_app
    return TestClient(make_app(world.db, world.out, world.gallery, kw.pop("token", ""), None, **kw),
                      base_url="http://127.0.0.1:8090")


def test_enrol_checks_the_model_and_the_embedding_like_enroll(world):
    from allinone.web.people import EnrolPolicy
    other = ModelInfo("cd" * 32, "Other.pt", "GaitBase", "euc")
    with _app_client(world, policy=EnrolPolicy(other)) as c:
        assert "another gait checkpoint" in _error(c.post("/api/enrol", json={"sighting_id": 2, "name": "C"}), 409)
    with Sightings(world.db, root=world.out) as s:
        wide = s.add(replace(unknown("hall", 9, T0 + 400, "U5", 9, world.out), embedding=np.ones((8, 4), np.float32)))
        thin = s.add(replace(unknown("hall", 10, T0 + 500, "U6", 10, world.out), n_silhouettes=3))
    with _app_client(world, policy=EnrolPolicy(None, 10)) as c:  # None: the gallery's own model
        assert "[8, 4]" in _error(c.post("/api/enrol", json={"sighting_id": wide, "name": "C"}), 409)
        assert "nothing to enrol" in _error(c.post("/api/enrol", json={"sighting_id": thin, "name": "C"}), 400)
    assert _gallery(world) == {"Alice": 1}


def test_rename_and_remove(client, world):
    changes = []
    with _app_client(world, on_gallery_change=lambda: changes.append(1)) as c:
        r = c.post("/api/people/Alice/rename", json={"new": "Alice B"})
        assert r.status_code == 200 and r.json() == {"renamed": "Alice", "to": "Alice B"}
        assert _gallery(world) == {"Alice B": 1}
        assert "no person named" in _error(c.post("/api/people/Alice/rename", json={"new": "X"}), 404)
        assert "name" in _error(c.post("/api/people/Alice B/rename", json={"new": ""}), 400)
        assert "name" in _error(c.post("/api/people/Alice B/rename", json={}), 400)
        c.post("/api/enrol", json={"unknown_id": "U1", "name": "Carol"})
        assert "exists already" in _error(c.post("/api/people/Carol/rename", json={"new": "Alice B"}), 409)
        assert c.post("/api/people/Alice B/remove").json() == {"removed": "Alice B"}
        assert _gallery(world) == {"Carol": 2}
        assert "no person named" in _error(c.post("/api/people/Alice B/remove"), 404)
        _error(c.get("/api/people/Carol/remove"), 404)  # a GET reads a person of that name: none
    assert len(changes) == 3  # rename, enrol, remove: the service is told each time


# --- safety ----------------------------------------------------------------------------------------------------


def test_every_answer_carries_the_policy(client):
    for r in (client.get("/"), client.get("/static/app.js"), client.get("/api/sightings"),
              client.get("/api/sightings/999"), client.get("/api/sightings", params={"limit": 0}),
              client.post("/api/enrol", json={})):
        assert r.headers["content-security-policy"] == CSP and r.headers["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP and "default-src 'self'" in CSP
    page = client.get("/").text
    assert "<script src=\"/static/app.js\" defer></script>" in page and page.count("<script") == 1
    assert "innerHTML" not in client.get("/static/app.js").text  # the DOM is built from text only


def test_without_a_token_writes_are_same_origin_on_the_loopback(client):
    evil = {"Origin": "http://evil.example"}
    assert "own page" in _error(client.post("/api/enrol", json={"unknown_id": "U1", "name": "C"}, headers=evil), 403)
    assert "own page" in _error(client.post("/api/people/Alice/remove", headers={"Sec-Fetch-Site": "cross-site"}),
                                403)
    # a page of another name that resolves here (DNS rebinding) is refused reads too
    for host in ("evil.example:8090", "127.0.0.1.evil.example", "[bad", ""):
        assert "loopback" in _error(client.get("/api/sightings", headers={"Host": host}), 403), host
    for host in ("localhost:8090", "127.0.0.2:8090", "[::1]:8090"):
        assert client.get("/api/sightings", headers={"Host": host}).status_code == 200, host
    same = {"Origin": "http://127.0.0.1:8090", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/enrol", json={"unknown_id": "U1", "name": "C"}, headers=same).status_code == 200


def test_a_failing_state_callback_leaves_the_stored_cameras(world):
    from starlette.testclient import TestClient

    from allinone.web.app import make_app

    def broken() -> list[dict]:
        raise RuntimeError("the service is stopping")
    with TestClient(make_app(world.db, world.out, world.gallery, "", broken), base_url="http://127.0.0.1:8090") as c:
        r = c.get("/api/cameras")
    assert r.status_code == 200 and {x["name"] for x in r.json()["cameras"]} == {"hall", "door"}


def test_two_enrols_of_one_sighting_at_once_enrol_it_once(client, world):
    from concurrent.futures import ThreadPoolExecutor
    body = {"sighting_id": world.ids["u1_door"], "name": "Carol"}
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(r.status_code for r in pool.map(lambda _: client.post("/api/enrol", json=body), range(4)))
    assert codes == [200, 409, 409, 409] and _gallery(world) == {"Alice": 1, "Carol": 1}
