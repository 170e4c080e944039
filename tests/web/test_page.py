"""The review page in a real headless Chromium (tests/web/cdp.py), served by serve_in_thread over a synthetic
sightings database: the timeline shows the sightings, a sighting opens with its pictures and numbers, an unknown
one is enrolled by name through the form and the person then shows named; a stored name with HTML and a script in
it is shown as text and runs nothing.

UPDATE_SCREENSHOTS=1 also writes the timeline and the person's page to docs/images/ (watch_timeline.png,
watch_person.png, shown in docs/guide/live.md)."""
from __future__ import annotations

import os
import shutil
from urllib.parse import quote

import cv2
import pytest

from allinone.gallery.store import GalleryStore
from allinone.web.app import make_app
from allinone.web.people import EnrolPolicy
from allinone.web.server import serve_in_thread
from tests.conftest import REPO
from tests.web.cdp import Browser
from tests.web.conftest import CAMERAS, HOSTILE, MODEL

SHOTS = REPO / "docs" / "images"


@pytest.fixture
def page(world, tmp_path):
    app = make_app(world.db, world.out, world.gallery, "", lambda: CAMERAS, policy=EnrolPolicy(MODEL, 10))
    server = serve_in_thread(app, "127.0.0.1", 0)
    browser = Browser(tmp_path / "profile")
    try:
        yield server.url, browser
    finally:
        browser.close()
        server.stop()


def _shot(browser: Browser, tmp_path, name: str):
    path = tmp_path / name
    browser.screenshot(path)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[:2] == (900, 1280) and img.std() > 10  # not a blank page
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, SHOTS / name)


def _ran_nothing(browser: Browser) -> None:
    """No dialog opened and nothing wrote to the console: no stored string became code."""
    kinds = {e.get("method") for e in browser.events}
    assert not kinds & {"Page.javascriptDialogOpening", "Runtime.consoleAPICalled", "Runtime.exceptionThrown"}, kinds
    assert browser.evaluate("document.title") == "allinone watch: review"
    assert browser.evaluate("document.querySelectorAll('img[src=\"x\"], script:not([src]), b').length") == 0


def test_the_page_shows_the_timeline_opens_a_sighting_and_enrols_it(page, world, tmp_path):
    url, b = page
    b.goto(url + "/")
    b.wait_for("document.body.dataset.ready === 'timeline:' && document.querySelectorAll('#camera-list li').length")
    rows = b.evaluate("[...document.querySelectorAll('#timeline-rows tr')].map(r => Number(r.dataset.id))")
    assert rows == [5, 4, 3, 2, 1]  # newest first
    cams = b.evaluate("document.getElementById('camera-list').innerText")
    assert "hall" in cams and "live" in cams and "reconnecting" in cams and "1200 frames analysed, 3 dropped" in cams
    # the hostile name is on the page as its own text, and nothing of it ran or became an element
    assert HOSTILE in b.evaluate("document.getElementById('timeline').innerText")
    _ran_nothing(b)
    _shot(b, tmp_path, "watch_timeline.png")

    b.evaluate(f"document.querySelector('tr[data-id=\"{world.ids['u1_door']}\"] a[href^=\"#/sighting\"]').click()")
    b.wait_for(f"document.body.dataset.ready === 'sighting:{world.ids['u1_door']}'")
    b.wait_for("document.getElementById('s-crop').complete && document.getElementById('s-crop').naturalWidth > 0")
    detail = b.evaluate("document.getElementById('view-sighting').innerText")
    assert "no clip" in detail and "0.900 (over the threshold 0.500)" in detail and "Alice 0.900" in detail
    assert b.evaluate("document.getElementById('s-gei').naturalWidth") == 64
    # a sighting with a clip plays it in the browser (an H.264 MP4 as the service writes them)
    b.evaluate(f"location.hash = '#/sighting/{world.ids['u1_hall']}'")
    b.wait_for(f"document.body.dataset.ready === 'sighting:{world.ids['u1_hall']}'")
    b.evaluate("(() => { const v = document.getElementById('s-clip'); v.muted = true; v.play(); })()")
    b.wait_for("document.getElementById('s-clip').currentTime > 0.3")
    assert "no clip" not in b.evaluate("document.getElementById('view-sighting').innerText")
    assert b.evaluate("document.getElementById('enrol').hidden") is False

    # enrol every sighting of U1 as Carol through the form
    b.evaluate("document.getElementById('e-name').value = 'Carol'; document.getElementById('e-all').checked = true;"
               "document.getElementById('enrol').requestSubmit()")
    b.wait_for("document.body.dataset.ready === 'person:Carol'")
    summary = b.evaluate("document.getElementById('p-summary').innerText")
    assert summary == "2 sightings on 2 cameras, in the gallery", summary
    assert b.evaluate("document.getElementById('p-actions').hidden") is False
    assert "Enrolled Carol" in b.evaluate("document.getElementById('message').innerText")
    b.wait_for("[...document.querySelectorAll('#p-rows img')].every(i => i.complete && i.naturalWidth > 0)")
    _shot(b, tmp_path, "watch_person.png")
    with GalleryStore(world.gallery, readonly=True) as store:
        assert {r["name"]: r["tracks"] for r in store.listing()} == {"Alice": 1, "Carol": 2}

    # the timeline now names them
    b.evaluate("location.hash = '#/'")
    b.wait_for("document.body.dataset.ready === 'timeline:'")
    named = b.evaluate(f"document.querySelector('tr[data-id=\"{world.ids['u1_hall']}\"]').innerText")
    assert "Carol" in named and "U1" in named

    # a match shows its likelihood ratio and verbal scale, and no enrol form
    b.evaluate(f"location.hash = '#/sighting/{world.ids['alice']}'")
    b.wait_for(f"document.body.dataset.ready === 'sighting:{world.ids['alice']}'")
    detail = b.evaluate("document.getElementById('s-fields').innerText")
    assert "1.20e+3 (strong support)" in detail and "0.200 (within the threshold 0.500)" in detail, detail
    assert b.evaluate("document.getElementById('enrol').hidden") is True

    # the people: the gallery's, the names only the sightings carry (as text), the unknown ids left
    b.evaluate("location.hash = '#/people'")
    b.wait_for("document.body.dataset.ready === 'people:'")
    named = b.evaluate("[...document.querySelectorAll('#people-named a')].map(a => a.textContent)")
    assert named == ["Alice", "Carol", HOSTILE]
    assert b.evaluate("[...document.querySelectorAll('#people-unknown a')].map(a => a.textContent)") == ["U2"]
    _ran_nothing(b)


def test_a_hostile_persons_page_is_text(page, world):
    url, b = page
    b.goto(url + "/#/person/" + quote(HOSTILE, safe=""))
    b.wait_for("(document.body.dataset.ready || '').startsWith('person:')")
    assert b.evaluate("document.getElementById('p-title').textContent") == HOSTILE
    assert b.evaluate("document.getElementById('p-summary').innerText") == \
        "1 sighting on 1 camera, not in the gallery now"
    _ran_nothing(b)
