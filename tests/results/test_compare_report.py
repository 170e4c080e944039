"""compare_report.html is inert: names escaped, no script, a CSP whose style hash matches the page's stylesheet."""
from __future__ import annotations

import base64
import hashlib
import re

from allinone.results.compare_report import render_compare_report


def _rec(name: str) -> dict:
    person = {"video": f"/x/{name}.mp4", "video_sha256": "a" * 64, "name": name, "track": 2, "first_frame": 5,
              "last_frame": 40, "seconds": [0.13, 1.33], "n_silhouettes": 30, "tracks_in_video": [1, 2],
              "frames": 50, "fps": 30.0, "rotation": 0, "crop": None, "gei": None}
    return {"created": "2026-01-01T00:00:00+00:00", "allinone_version": "0.1.0", "questioned": person,
            "reference": {**person, "name": "ref"}, "metric": "euc", "distance": 0.5, "lr": 0.004,
            "log10_lr": -2.4, "lr_at_bound": True, "lr_verbal": "moderately strong support for 'different people'",
            "verbal_scale": "ENFSI (2015)", "propositions": {"Hp": "same", "Hd": "different"},
            "lr_model": {"method": "logistic", "bounds": {"lower_lr": 0.004, "upper_lr": "inf"},
                         "fitted_on": {"name": name, "types": {"nm-01": 3}, "views": {"090": 3}},
                         "validation": {"cllr": 0.5}},
            "checkpoint_validated": False, "models": {"gait": {"path": f"/m/{name}.pt", "sha256": "b" * 64}},
            "settings": {}, "device": "cpu", "platform": {"python": "3.11"}, "files": {"tippett": None}}


def test_names_are_escaped_and_nothing_runs(tmp_path):
    evil = '<img src=x onerror="alert(1)">'
    page = render_compare_report(tmp_path, _rec(evil))
    assert evil not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "<script" not in page
    assert not [t for t in re.findall(r"<[^>]*>", page) if re.search(r"\son[a-z]+\s*=", t)]  # no handler in a tag
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    want = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"style-src 'sha256-{want}'" in page and "default-src 'none'" in page


def test_warning_limitations_and_bound_are_stated(tmp_path):
    page = render_compare_report(tmp_path, _rec("q"))
    assert "Not evidence" in page and "b" * 64 in page
    assert "1/250" in page and "at its bound" in page  # LR 0.004 written as 1/250, clipped to the lower bound
    assert "not the probability that they are the same person" in page
    rec = _rec("q") | {"checkpoint_validated": True}
    assert "Not evidence" not in render_compare_report(tmp_path, rec)
