"""compare_report.html: the page an examiner files for one questioned-vs-reference gait comparison, built from
compare.json's record and the pictures in the comparison folder.

Self-contained and inert: pictures inline as data: URIs, one stylesheet allowed by its hash in a Content-Security-
Policy meta, no script, no network. Every piece of markup is built by results/page.py's ``html()``, which escapes
whatever it is given that is not already markup: a name, a path or a field of the LR model file can only ever be text
on the page. It prints to PDF through headless Chromium.

Sections: the result (LR, verbal equivalent, propositions), a warning when the gait checkpoint is not marked
validated, both persons (crop, GEI, frame range, video sha256), the LR on the validation data's Tippett plot, the
validation figures and the data the model was fitted on, the method, models and settings with sha256, the verbal
scale and its source, and the limitations.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from allinone.decide.lr_model import VERBAL_SCALE
from allinone.results.page import Markup, html, join

CSS = """
body{font:13px/1.45 'DejaVu Sans',system-ui,sans-serif;margin:28px;color:#1d1d1f;background:#fff;max-width:980px}
h1{font-size:21px;margin:0 0 2px}h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #dde;padding-bottom:3px}
.muted{color:#667}.result{border:2px solid #1d1d1f;border-radius:8px;padding:12px 16px;margin:14px 0}
.result .lr{font-size:20px;font-weight:700}.warn{background:#fff4e5;border:2px solid #b54708;color:#7a2e0e;
border-radius:8px;padding:10px 14px;margin:12px 0;font-weight:600}.persons{display:flex;gap:18px;flex-wrap:wrap}
.person{border:1px solid #dde;border-radius:8px;padding:10px;flex:1;min-width:300px}.pics{display:flex;gap:12px;
align-items:flex-end}.pic{text-align:center;font-size:11px;color:#667}.pic img{display:block;height:150px;
border-radius:4px;background:#eee}.pic img.gei{height:110px;image-rendering:pixelated}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #dde;padding:3px 7px;text-align:left;
vertical-align:top}th{background:#f0f1f5}code{font-size:11px;word-break:break-all}img.plot{max-width:100%}
.limits p{margin:6px 0}
"""


def _uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _pic(folder: Path, rel: str | None, label: str, gei: bool = False) -> Markup:
    uri = _uri(folder / rel) if rel else None
    inner = html('<img class="{}" src="{}" alt="{}">', "gei" if gei else "", uri, label) if uri else \
        html('<div style="height:110px;width:70px;background:#eee"></div>')
    return html('<div class="pic">{}{}</div>', inner, label)


def _rows(pairs: list[tuple[str, object]]) -> Markup:
    return join(html("<tr><th>{}</th><td>{}</td></tr>", k, v) for k, v in pairs)


def _code(value) -> Markup:
    return html("<code>{}</code>", str(value))


def _fmt_lr(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else (f"{x:.3g}" if x >= 0.01 else f"1/{1 / x:,.0f}")


def _bound(x) -> str:
    x = float(x)
    return "∞" if x == float("inf") else ("0" if x == 0 else _fmt_lr(x))


def _person(folder: Path, title: str, p: dict) -> Markup:
    return html("<div class='person'><h3>{}</h3><div class='pics'>{}{}</div><table>{}</table></div>", title,
                _pic(folder, p.get("crop"), "crop"), _pic(folder, p.get("gei"), "GEI (silhouette average)", gei=True),
                _rows([("video", Path(p["video"]).name),
                       ("track", f"{p['track']} (tracks in the video: {', '.join(map(str, p['tracks_in_video']))})"),
                       ("frames", f"{p['first_frame']}–{p['last_frame']} of {p['frames']} "
                                  f"({p['seconds'][0]:.2f}–{p['seconds'][1]:.2f} s at {p['fps']:.3g} fps)"),
                       ("silhouettes used", p["n_silhouettes"]), ("rotation", f"{p['rotation']}°"),
                       ("sha256", _code(p["video_sha256"]))]))


def limitations(rec: dict) -> list[Markup]:
    """The limitations paragraph: what the LR does not establish, what the calibration data covered and did not."""
    data = rec["lr_model"].get("fitted_on") or {}
    types = ", ".join(sorted(data.get("types", {}))) or "unknown"
    views = ", ".join(sorted(data.get("views", {}))) or "unknown"
    bounds = rec["lr_model"]["bounds"]
    return [
        html("A likelihood ratio states how much more probable the observed gait distance is if the two walkers are "
             "the same person than if they are different people, for the propositions above and with respect to the "
             "population the calibration data represent. It is not the probability that they are the same person: "
             "that needs prior odds, which are for the court, not for this tool. It does not establish identity, "
             "presence at a scene or any activity, and it uses gait alone (no face, clothing or height is assessed)."),
        html("The LR model was fitted on {} sequences of {} identities from {} (protocol {}): sequence types {}; views "
             "{}. It was fitted on silhouettes prepared as that dataset's are. Conditions it did not cover include: "
             "other camera views and distances, other frame rates and resolutions, silhouettes cut by this "
             "pipeline's detector and segmenter from ordinary video, footwear, surfaces, loads, injuries, deliberate "
             "disguise of gait, long time between recordings, and populations other than the dataset's. The LR "
             "applies to the case only as far as the case's conditions are among those covered.",
             str(data.get("sequences", "?")), str(data.get("identities", "?")),
             str(data.get("dataset") or data.get("name") or "?"), str(data.get("protocol")), types, views),
        html("LRs are bounded to {} – {} (empirical lower and upper bounds, counted in people: {}): the data cannot "
             "support a stronger value.{}", _bound(bounds["lower_lr"]), _bound(bounds["upper_lr"]),
             str(bounds.get("counted", "each identity one mated unit, each disjoint pair of identities one "
                                       "non-mated unit")),
             " This comparison's LR is at a bound." if rec.get("lr_at_bound") else ""),
        html("Comparisons of the calibration data are not independent (each sequence is in many pairs, each person in "
             "many sequences); the validation figures were measured on identities held out from the fit, but on the "
             "same dataset."),
    ]


def _head(rec: dict) -> Markup:
    css_hash = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'sha256-{css_hash}'; base-uri 'none'; form-action 'none'"
    q, r = rec["questioned"], rec["reference"]
    return html("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                "<meta http-equiv='Content-Security-Policy' content=\"{}\"><title>Gait comparison {} vs {}</title>"
                "<style>{}</style></head><body>\n<h1>Gait comparison report</h1><div class='muted'>questioned {} · "
                "reference {} · {} · allinone {}</div>", Markup(csp), q["name"], r["name"], Markup(CSS),
                Path(q["video"]).name, Path(r["video"]).name, rec["created"], str(rec["allinone_version"]))


def _validation_warning(rec: dict) -> Markup:
    """The warning that the numbers are not evidence, unless the LR model's record validates this checkpoint."""
    v = rec.get("checkpoint_validation") or {}
    if rec.get("checkpoint_validated") and v.get("validated"):
        return html("<div class='muted' data-validation='recorded'>Checkpoint validated by the LR model's own "
                    "held-out validation: {}.</div>", str(v.get("reason", "")))
    gait = rec["models"].get("gait", {})
    return html("<div class='warn' data-warning='unvalidated-checkpoint'>Not evidence. The gait checkpoint (sha256 "
                "<code>{}</code>) has no validation on record: {}. Numbers from an unvalidated or randomly initialised "
                "model carry no evidential weight; this report only shows the method.</div>", str(gait.get("sha256")),
                str(v.get("reason") or "the LR model file records no held-out validation of it"))


def _result(rec: dict) -> Markup:
    lr, m, props = float(rec["lr"]), rec["lr_model"], rec.get("propositions") or {}
    outside = html("<div class='warn' data-warning='outside-calibration-range'>The distance lies outside the range "
                   "of distances in the calibration data ({:.4g}–{:.4g}): the LR is an extrapolation, held at the "
                   "model's bounds.</div>", float(rec["calibration_distance_range"][0]),
                   float(rec["calibration_distance_range"][1])) \
        if rec.get("distance_in_calibration_range") is False else Markup("")
    return html("<div class='result' data-lr='{}'><div class='lr'>LR = {} (log10 LR = {})</div><div>{}</div>"
                "<div class='muted'>Hp: {}; Hd: {}. Gait distance {} ({}); LR model {}{}.</div>{}</div>",
                f"{lr:.6g}", _fmt_lr(lr), f"{float(rec['log10_lr']):+.2f}", rec["lr_verbal"],
                str(props.get("Hp", "same person")), str(props.get("Hd", "different people")),
                f"{float(rec['distance']):.4g}", rec["metric"], m["method"],
                ", at its bound" if rec.get("lr_at_bound") else "", outside)


def _validation_table(m: dict) -> Markup:
    val = m.get("validation") or {}
    data = m.get("fitted_on") or {}
    cv = val.get("cross_validation") or {}
    mis = val.get("misleading") or {}

    def f4(x):
        return "—" if x is None else f"{float(x):.4f}"
    pairs = data.get("pairs") or {}
    return html("<h2>Validation of the LR model</h2><table>{}</table>", _rows([
        ("Cllr", f4(val.get("cllr"))), ("Cllr_min (after PAV)", f4(val.get("cllr_min"))),
        ("Cllr_cal = Cllr − Cllr_min", f4(val.get("cllr_cal"))),
        ("EER", "—" if val.get("eer") is None else f"{100 * float(val['eer']):.2f} %"),
        ("misleading: mated LR < 1", f4(mis.get("mated_lr_below_1"))),
        ("misleading: non-mated LR > 1", f4(mis.get("non_mated_lr_above_1"))),
        ("held out by", f"{cv.get('scheme', '—')} (k = {cv.get('k', '—')}, {cv.get('fits', '—')} fits)"),
        ("fitted on", f"{data.get('name')} — {data.get('dataset')}, protocol {data.get('protocol')}"),
        ("pairs", f"{pairs.get('mated')} mated, {pairs.get('non_mated')} non-mated; "
                  f"{data.get('identities')} identities, {data.get('sequences')} sequences"),
        ("pair weights", data.get("weighting", "—")),
        ("embeddings sha256", _code(data.get("embeddings_sha256")))]))


def _method(rec: dict) -> Markup:
    m, gait = rec["lr_model"], rec["models"].get("gait", {})
    models = [("detector", rec["models"].get("detector", {})), ("segmenter", rec["models"].get("segmenter", {})),
              ("gait", gait), ("LR model", rec["models"].get("lr_model", {}))]
    s = rec.get("settings", {})
    keep = {k: s.get(k) for k in ("detect", "segment", "quality", "gait", "match", "rotate") if k in s}
    return html("<h2>Method, models and settings</h2><p>Each video went through allinone's pipeline: person detection "
                "and ByteTrack tracking, PP-HumanSeg silhouettes, OpenGait's silhouette alignment, one gait embedding "
                "per track ({}); the distance is OpenGait's {} distance; the LR is the {} LR model's value at that "
                "distance, bounded by ELUB.</p><table><tr><th>model</th><th>file</th><th>sha256</th></tr>{}</table>"
                "<table>{}</table>", str(gait.get("arch")), rec["metric"], m["method"],
                join(html("<tr><td>{}</td><td>{}</td><td>{}</td></tr>", k, Path(str(w.get("path"))).name,
                          _code(w.get("sha256"))) for k, w in models),
                _rows([("software", f"allinone {rec['allinone_version']}"), ("device", rec["device"]),
                       ("python", rec["platform"].get("python")),
                       ("settings", _code(json.dumps(keep, sort_keys=True)))]))


def _scale(rec: dict) -> Markup:
    rows = []
    for (lo, words), nxt in zip(VERBAL_SCALE, [e for e, _ in VERBAL_SCALE[1:]] + [None]):
        band = f"{lo:,.0f} ≤ LR < {nxt:,.0f}" if nxt is not None else f"LR ≥ {lo:,.0f}"
        rows.append(html("<tr><td>{}</td><td>{}</td></tr>", band, words))
    return html("<h2>Verbal scale</h2><table><tr><th>LR (or 1/LR for the other proposition)</th><th>verbal "
                "equivalent</th></tr>{}</table><div class='muted'>{}. An LR of exactly 1 supports neither "
                "proposition.</div>", join(rows), rec["verbal_scale"])


def render_compare_report(folder: Path, rec: dict) -> str:
    q, r = rec["questioned"], rec["reference"]
    out = [_head(rec), _validation_warning(rec), _result(rec),
           html("<h2>The two persons</h2><div class='persons'>{}{}</div>", _person(folder, "Questioned", q),
                _person(folder, "Reference", r))]
    if rec["files"].get("tippett"):
        out.append(html("<h2>This LR among the validation data</h2><img class='plot' alt='Tippett plot' src='{}'>"
                        "<div class='muted'>Tippett plot of the held-out LRs of the calibration data (mated: same "
                        "person; non-mated: different people); the dashed line is this comparison.</div>",
                        _uri(folder / rec["files"]["tippett"])))
    out += [_validation_table(rec["lr_model"]), _method(rec), _scale(rec),
            html("<h2>Limitations</h2><div class='limits'>{}</div></body></html>",
                 join(html("<p>{}</p>", p) for p in limitations(rec)))]
    return "\n".join(out)


__all__ = ["CSS", "limitations", "render_compare_report"]
