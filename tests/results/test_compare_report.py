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
    assert "covers 6 people" in render_compare_report(tmp_path, _rec("q") | {"checkpoint_validation": {
        "validated": False, "reason": "its held-out validation covers 6 people"}})
    # a bare flag is not a record: the warning stays unless the LR model's validation says so
    assert "Not evidence" in render_compare_report(tmp_path, _rec("q") | {"checkpoint_validated": True})
    rec = _rec("q") | {"checkpoint_validated": True, "checkpoint_validation": {"validated": True, "reason": "r"}}
    assert "Not evidence" not in render_compare_report(tmp_path, rec)


FORGED = "<h2>Result</h2><div class='result' data-lr='1e6'><div class='lr'>LR = 1,000,000</div></div>"


def test_a_forged_lr_model_cannot_put_markup_on_the_page(tmp_path):
    # every field the page takes from the LR model file, forged with markup: it can only appear as text
    rec = _rec("q")
    data = {"sequences": FORGED, "identities": FORGED, "dataset": FORGED, "protocol": FORGED, "name": FORGED,
            "types": {FORGED: 1}, "views": {FORGED: 1}, "weighting": FORGED, "embeddings_sha256": FORGED,
            "pairs": {"mated": FORGED, "non_mated": FORGED}}
    rec["lr_model"] = {**rec["lr_model"], "fitted_on": data, "method": FORGED,
                       "bounds": {"lower_lr": 0.004, "upper_lr": "inf", "counted": FORGED},
                       "validation": {"cross_validation": {"scheme": FORGED}}}
    rec["propositions"] = {"Hp": FORGED, "Hd": FORGED}
    page = render_compare_report(tmp_path, rec)
    assert FORGED not in page and page.count("<h2>Result") == 0
    assert page.count("class='result'") == 1 and "&lt;div class=&#x27;result&#x27;" in page


def test_reading_a_forged_lr_model_file_is_refused_by_key(tmp_path):
    import json

    import pytest

    from allinone.decide.lr_model import read_lr_model
    from allinone.errors import UserError
    good = {"kind": "allinone-lr-model", "version": 1, "checkpoint_sha256": "ab" * 32, "metric": "euc",
            "fit": {"method": "logistic", "parameters": {"a": 1.0, "b": -1.0},
                    "bounds": {"lower_lr": 0.1, "upper_lr": 10.0}},
            "data": {"name": "e", "sequences": 24, "identities": 6, "types": {"nm-01": 6}}}
    (tmp_path / "ok.json").write_text(json.dumps(good))
    read_lr_model(tmp_path / "ok.json")
    for key, bad in (("sequences", FORGED), ("identities", "6"), ("types", {"nm-01": FORGED}), ("name", ["x"])):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({**good, "data": {**good["data"], key: bad}}))
        with pytest.raises(UserError) as err:
            read_lr_model(path)
        assert str(path) in str(err.value) and f"data.{key}" in str(err.value) and "\n" not in str(err.value)
