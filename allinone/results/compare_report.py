"""compare_report.html: the page an examiner files for one questioned-vs-reference gait comparison, built from
compare.json's record and the pictures in the comparison folder.

Self-contained and inert: pictures inline as data: URIs, one stylesheet allowed by its hash in a Content-Security-
Policy meta, no script, no network, every name and path html-escaped. It prints to PDF through headless Chromium.

Sections: the result (LR, verbal equivalent, propositions), a warning when the gait checkpoint is not marked
validated, both persons (crop, GEI, frame range, video sha256), the LR on the validation data's Tippett plot, the
validation figures and the data the model was fitted on, the method, models and settings with sha256, the verbal
scale and its source, and the limitations.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path

from allinone.decide.lr_model import VERBAL_SCALE

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


def _pic(folder: Path, rel: str | None, label: str, gei: bool = False) -> str:
    e = html.escape
    uri = _uri(folder / rel) if rel else None
    inner = f'<img class="{"gei" if gei else ""}" src="{uri}" alt="{e(label)}">' if uri else \
        '<div style="height:110px;width:70px;background:#eee"></div>'
    return f'<div class="pic">{inner}{e(label)}</div>'


def _rows(pairs: list[tuple[str, object]]) -> str:
    e = html.escape
    return "".join(f"<tr><th>{e(k)}</th><td>{v if isinstance(v, Markup) else e(str(v))}</td></tr>" for k, v in pairs)


class Markup(str):
    """Text already made safe (built from escaped parts)."""


def _fmt_lr(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else (f"{x:.3g}" if x >= 0.01 else f"1/{1 / x:,.0f}")


def _bound(x) -> str:
    x = float(x)
    return "∞" if x == float("inf") else ("0" if x == 0 else _fmt_lr(x))


def _person(folder: Path, title: str, p: dict) -> str:
    e = html.escape
    return (f"<div class='person'><h3>{e(title)}</h3><div class='pics'>{_pic(folder, p.get('crop'), 'crop')}"
            f"{_pic(folder, p.get('gei'), 'GEI (silhouette average)', gei=True)}</div><table>" + _rows([
                ("video", Path(p["video"]).name), ("track", f"{p['track']} (tracks in the video: "
                                                            f"{', '.join(map(str, p['tracks_in_video']))})"),
                ("frames", f"{p['first_frame']}–{p['last_frame']} of {p['frames']} "
                           f"({p['seconds'][0]:.2f}–{p['seconds'][1]:.2f} s at {p['fps']:.3g} fps)"),
                ("silhouettes used", p["n_silhouettes"]),
                ("rotation", f"{p['rotation']}°"),
                ("sha256", Markup(f"<code>{e(p['video_sha256'])}</code>"))]) + "</table></div>")


def limitations(rec: dict) -> list[str]:
    """The limitations paragraph: what the LR does not establish, what the calibration data covered and did not."""
    data = rec["lr_model"].get("fitted_on") or {}
    types = ", ".join(sorted(data.get("types", {}))) or "unknown"
    views = ", ".join(sorted(data.get("views", {}))) or "unknown"
    out = [
        "A likelihood ratio states how much more probable the observed gait distance is if the two walkers are the "
        "same person than if they are different people, for the propositions above and with respect to the "
        "population the calibration data represent. It is not the probability that they are the same person: that "
        "needs prior odds, which are for the court, not for this tool. It does not establish identity, presence at "
        "a scene or any activity, and it uses gait alone (no face, clothing or height is assessed).",
        f"The LR model was fitted on {data.get('sequences', '?')} sequences of {data.get('identities', '?')} "
        f"identities from {html.escape(str(data.get('dataset') or data.get('name') or '?'))} "
        f"(protocol {html.escape(str(data.get('protocol')))}): sequence types {html.escape(types)}; views "
        f"{html.escape(views)}. It was fitted on silhouettes prepared as that dataset's are. Conditions it did not "
        "cover include: other camera views and distances, other frame rates and resolutions, silhouettes cut by "
        "this pipeline's detector and segmenter from ordinary video, footwear, surfaces, loads, injuries, "
        "deliberate disguise of gait, long time between recordings, and populations other than the dataset's. "
        "The LR applies to the case only as far as the case's conditions are among those covered.",
        f"LRs are bounded to {_bound(rec['lr_model']['bounds']['lower_lr'])} – "
        f"{_bound(rec['lr_model']['bounds']['upper_lr'])} "
        "(empirical lower and upper bounds of the fitting data): the data cannot support a stronger value."
        + (" This comparison's LR is at a bound." if rec.get("lr_at_bound") else ""),
        "Comparisons of the calibration data are not independent (each sequence is in many pairs); the validation "
        "figures were measured on identities held out from the fit, but on the same dataset.",
    ]
    return out


def render_compare_report(folder: Path, rec: dict) -> str:
    e = html.escape
    css_hash = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    csp = f"default-src 'none'; img-src data:; style-src 'sha256-{css_hash}'; base-uri 'none'; form-action 'none'"
    q, r, m = rec["questioned"], rec["reference"], rec["lr_model"]
    val = m.get("validation") or {}
    gait = rec["models"].get("gait", {})
    props = rec.get("propositions") or {}
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
           f"<title>Gait comparison {e(q['name'])} vs {e(r['name'])}</title><style>{CSS}</style></head><body>",
           f"<h1>Gait comparison report</h1><div class='muted'>questioned {e(Path(q['video']).name)} · reference "
           f"{e(Path(r['video']).name)} · {e(rec['created'])} · allinone {e(str(rec['allinone_version']))}</div>"]
    if not rec.get("checkpoint_validated"):
        out.append("<div class='warn' data-warning='unvalidated-checkpoint'>Not evidence. The gait checkpoint "
                   f"(sha256 <code>{e(str(gait.get('sha256')))}</code>) is not marked as a validated, released model. "
                   "Numbers from an unvalidated or randomly initialised model carry no evidential weight; this "
                   "report only shows the method.</div>")
    lr = float(rec["lr"])
    out.append(f"<div class='result' data-lr='{lr:.6g}'><div class='lr'>LR = {e(_fmt_lr(lr))} "
               f"(log10 LR = {rec['log10_lr']:+.2f})</div><div>{e(rec['lr_verbal'])}</div>"
               f"<div class='muted'>Hp: {e(str(props.get('Hp', 'same person')))}; Hd: "
               f"{e(str(props.get('Hd', 'different people')))}. Gait distance {rec['distance']:.4g} "
               f"({e(rec['metric'])}); LR model {e(m['method'])}"
               + (", at its bound" if rec.get("lr_at_bound") else "") + ".</div>"
               + ("<div class='warn' data-warning='outside-calibration-range'>The distance lies outside the range "
                  "of distances in the calibration data "
                  f"({rec['calibration_distance_range'][0]:.4g}–{rec['calibration_distance_range'][1]:.4g}): the LR "
                  "is an extrapolation, held at the model's bounds.</div>"
                  if rec.get("distance_in_calibration_range") is False else "") + "</div>")
    out.append("<h2>The two persons</h2><div class='persons'>" + _person(folder, "Questioned", q)
               + _person(folder, "Reference", r) + "</div>")
    if rec["files"].get("tippett"):
        out.append("<h2>This LR among the validation data</h2>"
                   f"<img class='plot' alt='Tippett plot' src='{_uri(folder / rec['files']['tippett'])}'>"
                   "<div class='muted'>Tippett plot of the held-out LRs of the calibration data (mated: same "
                   "person; non-mated: different people); the dashed line is this comparison.</div>")
    data = m.get("fitted_on") or {}
    cv = val.get("cross_validation") or {}
    mis = val.get("misleading") or {}

    def f4(x):
        return "—" if x is None else f"{float(x):.4f}"
    out.append("<h2>Validation of the LR model</h2><table>" + _rows([
        ("Cllr", f4(val.get("cllr"))), ("Cllr_min (after PAV)", f4(val.get("cllr_min"))),
        ("Cllr_cal = Cllr − Cllr_min", f4(val.get("cllr_cal"))),
        ("EER", "—" if val.get("eer") is None else f"{100 * float(val['eer']):.2f} %"),
        ("misleading: mated LR < 1", f4(mis.get("mated_lr_below_1"))),
        ("misleading: non-mated LR > 1", f4(mis.get("non_mated_lr_above_1"))),
        ("held out by", f"{cv.get('scheme', '—')} (k = {cv.get('k', '—')}, {cv.get('fits', '—')} fits)"),
        ("fitted on", f"{data.get('name')} — {data.get('dataset')}, protocol {data.get('protocol')}"),
        ("pairs", f"{data.get('pairs', {}).get('mated')} mated, {data.get('pairs', {}).get('non_mated')} non-mated; "
                  f"{data.get('identities')} identities, {data.get('sequences')} sequences"),
        ("pair weights", data.get("weighting", "—")),
        ("embeddings sha256", Markup(f"<code>{e(str(data.get('embeddings_sha256')))}</code>"))]) + "</table>")
    models = [("detector", rec["models"].get("detector", {})), ("segmenter", rec["models"].get("segmenter", {})),
              ("gait", gait), ("LR model", rec["models"].get("lr_model", {}))]
    out.append("<h2>Method, models and settings</h2><p>Each video went through allinone's pipeline: person detection "
               "and ByteTrack tracking, PP-HumanSeg silhouettes, OpenGait's silhouette alignment, one gait embedding "
               f"per track ({e(str(gait.get('arch')))}); the distance is OpenGait's {e(rec['metric'])} distance; "
               f"the LR is the {e(m['method'])} LR model's value at that distance, bounded by ELUB.</p>"
               "<table><tr><th>model</th><th>file</th><th>sha256</th></tr>" + "".join(
                   f"<tr><td>{e(k)}</td><td>{e(Path(str(w.get('path'))).name)}</td><td><code>"
                   f"{e(str(w.get('sha256')))}</code></td></tr>" for k, w in models) + "</table>")
    s = rec.get("settings", {})
    keep = {k: s.get(k) for k in ("detect", "segment", "quality", "gait", "match", "rotate") if k in s}
    out.append(f"<table>{_rows([('software', 'allinone ' + str(rec['allinone_version'])), ('device', rec['device']), ('python', rec['platform'].get('python')), ('settings', Markup('<code>' + e(json.dumps(keep, sort_keys=True)) + '</code>'))])}</table>")
    scale = []
    lo = 1.0
    for upper, words in VERBAL_SCALE[1:]:
        band = f"{lo:,.0f} – {upper:,.0f}" if upper != float("inf") else f"above {lo:,.0f}"
        scale.append(f"<tr><td>{e(band)}</td><td>{e(words)}</td></tr>")
        lo = upper
    out.append("<h2>Verbal scale</h2><table><tr><th>LR (or 1/LR for the other proposition)</th><th>verbal "
               "equivalent</th></tr>" + "".join(scale) + f"</table><div class='muted'>{e(rec['verbal_scale'])}."
               "</div>")
    out.append("<h2>Limitations</h2><div class='limits'>" + "".join(f"<p>{p}</p>" for p in limitations(rec))
               + "</div></body></html>")
    return "\n".join(out)


__all__ = ["CSS", "limitations", "render_compare_report"]
