"""Report cards from a run folder built by hand: a too_short card shows the crop or says why there is none, a taken
card is amber and says why it is unknown, long names stay inside their cards (checked in a real Chromium)."""
from __future__ import annotations

import re

import cv2
import numpy as np

from allinone.results.report import render_report
from tests.results.test_report import chromium

LONG = "lobby_monday_camera3_entrance_north_2026-11-30T08-15-00-G1234567890"  # one word: no break


def _run(tmp_path):
    run = tmp_path / "run"
    (run / "pictures/cam").mkdir(parents=True)
    (run / "pictures/gallery").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for rel in ("pictures/cam/001_crop.jpg", "pictures/cam/003_crop.jpg", "pictures/gallery/001_crop.png"):
        cv2.imwrite(str(run / rel), rng.integers(0, 255, (128, 60, 3), dtype=np.uint8))
    for rel in ("pictures/cam/001_gei.png", "pictures/gallery/001_gei.png"):
        cv2.imwrite(str(run / rel), rng.integers(0, 255, (64, 64), dtype=np.uint8))

    def track(tid, crop=None, gei=None, n_sil=0, dropped=None):
        t = {"id": tid, "first_frame": 1, "last_frame": 40, "n_frames": 40, "n_silhouettes": n_sil,
             "dropped": dropped or {}}
        if crop:
            t["crop"] = crop
        if gei:
            t["gei"] = gei
        return t
    tracks = [track(1, "pictures/cam/001_crop.jpg", "pictures/cam/001_gei.png", 30),
              track(2, n_sil=0, dropped={"border": 31, "occluded": 9}),  # too short, no crop, no silhouette
              track(3, "pictures/cam/003_crop.jpg", None, 0, {"border": 40}),  # too short, a crop, no silhouette
              track(4, "pictures/cam/001_crop.jpg", "pictures/cam/001_gei.png", 30)]
    ranking = [{"identity": LONG, "distance": 0.02}]

    def match(tid, status, identity, distance, reason):
        return {"probe_video": "cam", "probe_track": tid, "status": status, "identity": identity,
                "distance": distance, "reason": reason, "first_frame": 1, "last_frame": 40,
                "ranking": ranking if distance is not None else []}
    manifest = {
        "allinone_version": "0", "created": "now", "device": "cpu", "weights": {},
        "threshold": {"value": 0.035, "basis": "user"},
        "identities": [{"name": LONG, "tracks": [{}], "crop": "pictures/gallery/001_crop.png",
                        "gei": "pictures/gallery/001_gei.png"}],
        "videos": [{"name": "cam", "role": "probe", "path": "cam.mp4", "frames": 40, "fps": 25.0, "tracks": tracks,
                    "timings_s": {}}],
        "matches": [match(1, "match", LONG, 0.02, None), match(2, "too_short", None, None, "too_few_silhouettes"),
                    match(3, "too_short", None, None, "too_few_silhouettes"),
                    match(4, "unknown", None, 0.021, "taken")]}
    return run, manifest


def _cards(page: str) -> dict[int, str]:
    chunks = page.split('<div class="card ')[1:]
    return {int(re.search(r'data-track="(\d+)"', c).group(1)): c.split("<h2>")[0] for c in chunks}


def test_too_short_cards_show_the_crop_or_say_why_there_is_none(tmp_path):
    run, manifest = _run(tmp_path)
    cards = _cards(render_report(run, manifest))
    assert "no picture: no box of this person was usable" in cards[2]
    assert "no silhouette: 0 usable of 40 frames (left out: border 31, occluded 9)" in cards[2]
    assert cards[3].count("<img") == 1 and "data:image/jpeg" in cards[3]  # its crop
    assert "no silhouette: 0 usable of 40 frames (left out: border 40)" in cards[3]
    assert "no picture" not in cards[1] and cards[1].count("<img") == 4  # probe and gallery crop + GEI


def test_a_taken_card_is_amber_and_says_why_it_is_unknown(tmp_path):
    run, manifest = _run(tmp_path)
    cards = _cards(render_report(run, manifest))
    # the reason in the console's words (results/summary.py), not its code
    assert 'data-reason="taken"' in cards[4] and "unknown (its candidates went to people seen at the same time)" \
        in cards[4] and "(taken)" not in cards[4]
    assert "background:#b54708" in cards[4] and "#1a7f37" not in cards[4]  # the bar: amber, not green
    assert "went to a person seen at the same time" in cards[4]
    assert "background:#1a7f37" in cards[1]  # a match's bar stays green


def test_long_names_stay_inside_their_cards_in_chromium(tmp_path):
    run, manifest = _run(tmp_path)
    page = render_report(run, manifest)
    # every picture inside its card and clear of the others; every text either fits its box or is cut with an
    # ellipsis inside it (a label spilling over the next picture is what a long name did before)
    probe = """<script>window.addEventListener('load', () => { const bad = [];
      const inside = (q, r) => q.right <= r.right + 0.5 && q.left >= r.left - 0.5;
      document.querySelectorAll('.card, .tile').forEach(c => { const r = c.getBoundingClientRect();
        const pics = Array.from(c.querySelectorAll('img, .nopic')).map(e => e.getBoundingClientRect());
        pics.forEach((q, i) => { if (!inside(q, r)) bad.push((c.dataset.track || 'tile') + ':picture out');
          pics.slice(i + 1).forEach(o => { if (q.left < o.right - 0.5 && o.left < q.right - 0.5 &&
            q.top < o.bottom - 0.5 && o.top < q.bottom - 0.5) bad.push((c.dataset.track || 'tile') + ':overlap'); });
        });
        c.querySelectorAll('h3, .name, .runners, b').forEach(e => { const st = getComputedStyle(e);
          if (!inside(e.getBoundingClientRect(), r) ||
              (e.scrollWidth > e.clientWidth + 1 && !(st.overflowX === 'hidden' && st.textOverflow === 'ellipsis')))
            bad.push((c.dataset.track || 'tile') + ':' + e.tagName + ' spills'); }); });
      document.body.dataset.overflow = bad.length ? bad.join(',') : 'none'; });</script>"""
    # the page's CSP admits only its own script (by hash): the measuring script is admitted by its hash too
    import base64
    import hashlib
    body = probe[len("<script>"):-len("</script>")]
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    page = re.sub(r"script-src ", f"script-src 'sha256-{digest}' ", page, count=1)
    (run / "report.html").write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
    res = chromium(tmp_path, "--window-size=1280,1400", "--virtual-time-budget=5000", "--dump-dom",
                   (run / "report.html").as_uri())
    found = re.search(r'data-overflow="([^"]*)"', res.stdout)
    assert found, res.stderr[-500:]
    assert found.group(1) == "none"


def test_a_match_card_shows_the_gallery_track_it_matched_not_the_identitys_first(tmp_path):
    """An identity of two gallery tracks, matched through its second: the card shows the second's crop and GEI."""
    from allinone.results.report import _data_uri
    run, manifest = _run(tmp_path)
    second = {"video": "gallery", "track": 2, "crop": "pictures/cam/003_crop.jpg", "gei": "pictures/cam/001_gei.png"}
    manifest["identities"][0]["tracks"] = [{"video": "gallery", "track": 1, "crop": "pictures/gallery/001_crop.png",
                                            "gei": "pictures/gallery/001_gei.png"}, second]
    manifest["matches"][0]["matched_track"] = {"video": "gallery", "track": 2}
    card = _cards(render_report(run, manifest))[1]
    assert _data_uri(run / second["crop"]) in card and _data_uri(run / second["gei"]) in card
    assert _data_uri(run / "pictures/gallery/001_crop.png") not in card
    del manifest["matches"][0]["matched_track"]  # a run.json without it (an older run): the identity's first
    assert _data_uri(run / "pictures/gallery/001_crop.png") in _cards(render_report(run, manifest))[1]
