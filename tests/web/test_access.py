"""Who may ask: a token for a bind beyond the loopback (refused without one, checked on every request), the
browser's cookie, and the server in a thread (serve_in_thread) over real HTTP."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from starlette.testclient import TestClient

from allinone.errors import UserError
from allinone.web.app import make_app
from allinone.web.guard import COOKIE
from allinone.web.server import serve_in_thread

TOKEN = "s3cret-token-for-the-tests"


def _http(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_non_loopback_bind_without_a_token_is_refused(world):
    app = make_app(world.db, world.out, world.gallery, "", None)
    with pytest.raises(UserError, match="without a token"):
        serve_in_thread(app, "0.0.0.0", 0)


def test_with_a_token_every_request_needs_it_over_real_http(world):
    server = serve_in_thread(make_app(world.db, world.out, world.gallery, TOKEN, None), "0.0.0.0", 0)
    try:
        port = server.url.rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        assert _http(base + "/api/sightings")[0] == 401
        assert _http(base + "/api/enrol", {"unknown_id": "U1", "name": "Carol"})[0] == 401
        bad = {"Authorization": "Bearer wrong-token-wrong-token"}
        assert _http(base + "/api/enrol", {"unknown_id": "U1", "name": "Carol"}, bad)[0] == 403
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, page = _http(base + "/api/sightings", headers=auth)
        assert status == 200 and len(page["sightings"]) == 5
        status, done = _http(base + "/api/enrol", {"unknown_id": "U1", "name": "Carol"}, auth)
        assert status == 200 and done["sightings_named"] == 2
        with urllib.request.urlopen(base + "/", timeout=10) as r:  # the page's own files hold no data
            assert r.status == 200 and b"app.js" in r.read()
    finally:
        server.stop()
    assert not server.thread.is_alive()


def test_a_browser_gets_the_token_as_a_strict_cookie(world):
    app = make_app(world.db, world.out, world.gallery, TOKEN, None)
    with TestClient(app, base_url="http://192.0.2.7:8090") as c:  # a host beyond the loopback: the token rules
        assert c.get("/?token=nope", follow_redirects=False).status_code == 403
        r = c.get(f"/?token={TOKEN}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        c.cookies.set(COOKIE, TOKEN)
        assert c.get("/api/people").status_code == 200
        evil = {"Origin": "http://evil.example"}
        assert c.post("/api/enrol", json={"unknown_id": "U1", "name": "C"}, headers=evil).status_code == 403
        same = {"Origin": "http://192.0.2.7:8090"}
        assert c.post("/api/enrol", json={"unknown_id": "U1", "name": "C"}, headers=same).status_code == 200
        c.cookies.set(COOKIE, "wrong")
        assert c.get("/api/people").status_code == 403


def test_a_port_in_use_is_one_line(world):
    app = make_app(world.db, world.out, world.gallery, "", None)
    first = serve_in_thread(app, "127.0.0.1", 0)
    try:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(UserError, match=f"127.0.0.1:{port}"):
            serve_in_thread(make_app(world.db, world.out, world.gallery, "", None), "127.0.0.1", port)
    finally:
        first.stop()
