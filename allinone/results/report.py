"""report.html: one self-contained page per run (styles, script and pictures inline; no network), built from run.json
and the pictures in the run folder. The result videos are played from the run folder itself.

Per probe person: their crop and silhouette average (GEI), the status and reason, the identity they were matched to
(its crop and GEI beside theirs), the distance against the threshold as a bar, the runner-up identities, and a
timeline of when they are visible, which plays the result video from that moment when clicked (cards for the first
CARDS_MAX tracks of a video, then one table row per track, so a long run's page stays a few megabytes). Then the
gallery identities, the threshold and its basis, the models and device, per-stage timings, and a probe × gallery
distance heat map where its cells can be read, else each track's nearest distance by outcome (heatmap.png).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from allinone.results.page import csp_meta, inline_script, url
from allinone.results.words import why

REPORT = "report.html"
HEATMAP = "heatmap.png"

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px}.muted{color:#667}
.facts{display:flex;flex-wrap:wrap;gap:8px 28px;background:#fff;padding:12px 16px;border-radius:8px;
border:1px solid #dde}.facts b{display:block;font-size:12px;color:#667;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #dde;border-left:6px solid #999;border-radius:8px;padding:12px;width:430px}
.card.match{border-left-color:#1a7f37}.card.unknown{border-left-color:#b42318}.card.too_short{border-left-color:#999}
.card h3{margin:0 0 8px;font-size:16px}.pics{display:flex;gap:10px;align-items:flex-end}
.pic{text-align:center;font-size:11px;color:#667}.pic img{display:block;height:96px;border-radius:4px;
background:#eee;image-rendering:auto}.pic img.gei{height:64px;image-rendering:pixelated}.arrow{font-size:22px;color:#667;
padding:0 4px 30px}.bar{position:relative;height:12px;background:#eef;border-radius:6px;margin:10px 0 2px}
.bar .fill{position:absolute;left:0;top:0;bottom:0;border-radius:6px}.bar .mark{position:absolute;top:-4px;
bottom:-4px;width:2px;background:#111}.timeline{position:relative;height:16px;background:#eee;border-radius:4px;
cursor:pointer;margin-top:8px}.timeline .span{position:absolute;top:0;bottom:0;background:#4a6cf7;border-radius:4px}
.runners{font-size:12px;color:#445;margin-top:6px}.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{background:#fff;border:1px solid #dde;border-radius:8px;padding:8px;text-align:center;font-size:12px}
.tile .pics{justify-content:center}video{max-width:100%;max-height:480px;background:#000;border-radius:6px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #dde;padding:4px 8px;text-align:right}
th{background:#f0f1f5}td:first-child,th:first-child{text-align:left}.legend{font-size:12px;color:#556}
.card h3,.tile b,.runners{overflow-wrap:anywhere}.pics{flex-wrap:wrap}.pic .name{display:block;max-width:150px;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.tile{max-width:240px}
.nopic{display:flex;align-items:center;justify-content:center;box-sizing:border-box;height:96px;width:110px;
padding:6px;background:#f3f3f5;border:1px dashed #bbc;border-radius:4px;font-size:11px;color:#556;text-align:center}
.card[data-reason=taken]{border-left-color:#b54708}
"""

SCRIPT = """
const videos = Array.from(document.querySelectorAll('video'));
let loaded = 0;
function status(s){ document.body.dataset.videoStatus = s; }
if (!videos.length) status('none');
videos.forEach(v => {
  v.addEventListener('loadeddata', () => { loaded += 1; if (loaded === videos.length &&
      !String(document.body.dataset.videoStatus).startsWith('error')) status('ok'); });
  v.addEventListener('error', () => status('error: ' + v.id + ' code ' + (v.error ? v.error.code : '?')));
});
function play(id, t){ const v = document.getElementById(id); if (!v) return; v.currentTime = t;
  v.scrollIntoView({behavior: 'smooth', block: 'center'}); v.play(); }
document.querySelectorAll('.timeline[data-video]').forEach(el => el.addEventListener('click',
  () => play(el.dataset.video, Number(el.dataset.t))));
"""


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _img(run: Path, rel: str | None, label: str, gei: bool = False, missing: str = "no picture") -> str:
    """A picture with its label under it (cut with an ellipsis when long, whole in the tooltip); where there is no
    picture, a box saying ``missing``."""
    uri = _data_uri(run / rel) if rel else None
    e = html.escape
    inner = f'<img class="{"gei" if gei else ""}" src="{uri}" alt="{e(label)}">' if uri else \
        f'<div class="nopic">{e(missing)}</div>'
    return f'<div class="pic">{inner}<span class="name" title="{e(label)}">{e(label)}</span></div>'


def _dropped(track: dict) -> str:
    """Why a track has no silhouettes: how many of its frames were usable, and the reasons the rest were not."""
    reasons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (track.get("dropped") or {}).items() if v)
    return (f"no silhouette: {track.get('n_silhouettes', 0)} usable of {track.get('n_frames', '?')} frames"
            + (f" (left out: {reasons})" if reasons else ""))


HEATMAP_MAX = (120, 80)  # probe tracks, identities: beyond either, one row or column is too thin to read
CARDS_MAX = 200  # per probe video: cards with pictures; every track is in the table under them


def _matrix(manifest: dict, run: Path | None) -> tuple[np.ndarray, list[str], list[dict]]:
    """(distances [rows, identities], identity names, the match entries of the rows): from the run's
    distances.npz when it has one, else from the rankings run.json keeps (an older run, a live one)."""
    rows = [m for m in manifest.get("matches", []) if m["ranking"]]
    file = manifest.get("distances_file")
    if run is not None and file and (run / file).is_file():
        with np.load(run / file, allow_pickle=False) as f:
            names = [str(x) for x in f["identity"]]
            at = {(str(v), int(t)): i for i, (v, t) in enumerate(zip(f["probe_video"], f["probe_track"]))}
            keep = [m for m in rows if (m["probe_video"], m["probe_track"]) in at]
            d = f["distance"][[at[(m["probe_video"], m["probe_track"])] for m in keep]].astype(np.float64)
        return d.reshape(len(keep), len(names)), names, keep
    names = [i["name"] for i in manifest.get("identities", [])]
    col = {n: k for k, n in enumerate(names)}
    d = np.full((len(rows), len(names)), np.nan)
    for r, m in enumerate(rows):
        for x in m["ranking"]:
            if x["identity"] in col:
                d[r, col[x["identity"]]] = x["distance"]
    return d, names, rows


def heatmap(manifest: dict, path: Path, run: Path | None = None) -> str | None:
    """Probe tracks × gallery identities distances as a PNG: the heat map where every cell can be read, else a
    summary (each track's nearest distance by outcome, against the threshold). Returns which, or None when there is
    nothing to draw."""
    d, names, rows = _matrix(manifest, run)
    if not len(rows) or not names:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from allinone.results.fonts import font_rc
    if len(rows) > HEATMAP_MAX[0] or len(names) > HEATMAP_MAX[1]:
        with plt.rc_context(font_rc([], str(path))):
            _draw_summary(plt, d, rows, manifest, path)
        return "summary"
    labels = [f"{m['probe_video']} P{m['probe_track']}" for m in rows]
    with plt.rc_context(font_rc(names + labels, str(path))):  # names in any script the system has a font for
        _draw_heatmap(plt, d, names, labels, rows, manifest, path)
    return "heatmap"


def _draw_summary(plt, d: np.ndarray, rows: list[dict], manifest: dict, path: Path) -> None:
    nearest = np.nanmin(np.where(np.isnan(d), np.inf, d), axis=1)
    t = manifest.get("threshold", {}).get("value")
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    groups = [("matched", "#1a7f37", lambda m: m["status"] == "match"),
              ("unknown: taken", "#b54708", lambda m: m["reason"] == "taken"),
              ("unknown: none within", "#b42318", lambda m: m["status"] != "match" and m["reason"] != "taken")]
    finite = nearest[np.isfinite(nearest)]
    bins = np.linspace(float(finite.min()), float(finite.max()) + 1e-9, 60) if len(finite) else 10
    for label, color, pick in groups:
        sel = np.array([pick(m) for m in rows], bool) & np.isfinite(nearest)
        if sel.any():
            ax.hist(nearest[sel], bins=bins, color=color, alpha=0.7, label=f"{label} ({int(sel.sum())})")
    if t is not None:
        ax.axvline(t, color="k", lw=1.5, label=f"threshold {t:.4g}")
    ax.set_xlabel("distance to the nearest identity")
    ax.set_ylabel("probe tracks")
    ax.set_title(f"{len(rows)} probe tracks × {d.shape[1]} identities: too many cells for a heat map "
                 "(every distance: distances.npz)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _draw_heatmap(plt, d: np.ndarray, names: list[str], labels: list[str], rows: list[dict], manifest: dict,
                  path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(names) + 2.5), max(2.5, 0.35 * len(rows) + 1.6)), dpi=100)
    im = ax.imshow(d, cmap="viridis_r", aspect="auto")
    def plain(label: str) -> str:  # a name is text, never matplotlib mathtext ("$...$")
        return label.replace("$", r"\$")
    ax.set_xticks(range(len(names)), [plain(n) for n in names], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [plain(x) for x in labels], fontsize=8)
    t = manifest.get("threshold", {}).get("value")
    for r, m in enumerate(rows):
        if m["status"] == "match" and m["identity"] in names:
            ax.add_patch(plt.Rectangle((names.index(m["identity"]) - 0.5, r - 0.5), 1, 1, fill=False, ec="red",
                                       lw=2))
    ax.set_title(f"distance (red: matched; threshold {t:.4g})" if t is not None else "distance", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    import warnings
    with warnings.catch_warnings():  # very long names: tight_layout gives up with a warning; the saved figure's
        warnings.simplefilter("ignore", UserWarning)  # tight bounding box below still holds every label
        fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _bar(distance: float | None, threshold: float | None, status: str = "", reason: str | None = None) -> str:
    """The distance against the threshold. Green only for a match; a track within the threshold that is unknown
    because its candidates were taken is amber and says so; red beyond the threshold."""
    if distance is None or threshold is None:
        return ""
    top = max(2 * threshold, distance * 1.05, 1e-12)
    fill = min(100.0, 100 * distance / top)
    mark = min(100.0, 100 * threshold / top)
    within = distance <= threshold
    color = "#1a7f37" if status == "match" else "#b54708" if within else "#b42318"
    note = " — within the threshold, but every candidate went to a person seen at the same time, which gave the " \
           "larger total margin" if within and status != "match" and reason == "taken" else ""
    return (f'<div class="bar" title="distance {distance:.4g} vs threshold {threshold:.4g}">'
            f'<div class="fill" style="width:{fill:.1f}%;background:{color}"></div>'
            f'<div class="mark" style="left:{mark:.1f}%"></div></div>'
            f'<div class="legend">distance {distance:.4g} · threshold {threshold:.4g} (the black line){note}</div>')


def _card(run: Path, m: dict, track: dict, video: dict, idents: dict, threshold: float | None,
          vid: str) -> str:
    status, reason = m["status"], m.get("reason")
    head = f"P{m['probe_track']} → {html.escape(m['identity'])}" if status == "match" else \
        f"P{m['probe_track']}: {status.replace('_', ' ')} ({html.escape(why(reason, short=True))})"
    pics = _img(run, track.get("crop"), "probe", missing="no picture: no box of this person was usable for one") \
        + _img(run, track.get("gei"), "GEI", gei=True, missing=_dropped(track))
    if status == "match":
        i = idents.get(m["identity"], {})
        near = m.get("matched_track") or {}
        member = next((t for t in i.get("tracks", []) if near and (t.get("video"), t.get("track")) == (
            near.get("video"), near.get("track")) and ("crop" in t or "gei" in t)), i)  # else the identity's first
        pics += '<div class="arrow">⇄</div>' + _img(run, member.get("crop"), m["identity"]) + \
            _img(run, member.get("gei"), "GEI", gei=True)
    runners = ", ".join(f"{html.escape(x['identity'])} {x['distance']:.4g}" for x in m["ranking"][:4]
                        if x["identity"] != m.get("identity"))[:300]
    frames = max(1, video.get("frames") or 1)
    fps = video.get("fps") or 30.0
    first, last = track["first_frame"], track["last_frame"]
    timeline = (f'<div class="timeline" title="frames {first}–{last}: click to play from here" '
                f'data-video="{vid}" data-t="{(first - 1) / fps:.3f}"><div class="span" style="left:'
                f'{100 * (first - 1) / frames:.2f}%;width:{max(0.5, 100 * (last - first + 1) / frames):.2f}%">'
                f'</div></div><div class="legend">visible frames {first}–{last} of {frames} '
                f'({(first - 1) / fps:.1f}–{last / fps:.1f} s)</div>')
    return (f'<div class="card {html.escape(status)}" data-reason="{html.escape(str(reason or ""))}" '
            f'data-track="{m["probe_track"]}"><h3>{head}</h3><div class="pics">{pics}'
            f'</div>{_bar(m.get("distance"), threshold, status, reason)}'
            + (f'<div class="runners">runners-up: {runners}</div>' if runners else "")
            + timeline + "</div>")


def _video_section(run: Path, v: dict, vid: str, rows: list[dict], idents: dict, t: float | None) -> str:
    """A probe video's heading, result video and cards (the first CARDS_MAX; beyond them one table row a track).
    ``vid``: the video element's id (never a name)."""
    e = html.escape
    tracks = {tr["id"]: tr for tr in v["tracks"]}
    counts = {s: sum(m["status"] == s for m in rows) for s in ("match", "unknown", "too_short")}
    out = [f"<h2>{e(v['name'])} <span class='muted'>· {counts['match']} matched, {counts['unknown']} unknown, "
           f"{counts['too_short']} too short</span></h2>"]
    if v.get("result_video"):
        out.append(f"<video id='{vid}' src='{e(url(v['result_video']))}' controls preload='auto' "
                   "muted playsinline></video>")
    out.append("<div class='cards'>" + "".join(
        _card(run, m, tracks.get(m["probe_track"], {"first_frame": 1, "last_frame": 1}), v, idents, t, vid)
        for m in rows[:CARDS_MAX]) + "</div>")
    if len(rows) > CARDS_MAX:
        out.append(f"<p class='muted'>cards for the first {CARDS_MAX} of {len(rows)} probe tracks; every track is "
                   "in this table and in matches.csv</p><table class='all'><tr><th>track</th><th>status</th>"
                   "<th>identity or reason</th><th>distance</th><th>frames</th></tr>" + "".join(
                       f"<tr><td>P{m['probe_track']}</td><td>{e(m['status'])}</td>"
                       f"<td>{e(str(m['identity'] or m.get('reason') or ''))}</td>"
                       f"<td>{'—' if m.get('distance') is None else format(m['distance'], '.4g')}</td>"
                       f"<td>{m.get('first_frame')}–{m.get('last_frame')}</td></tr>" for m in rows) + "</table>")
    return "".join(out)


def render_report(run: Path, manifest: dict) -> str:
    e = html.escape
    thr = manifest.get("threshold", {})
    t = thr.get("value")
    # the threshold module's one-line statement: the estimated FPIR with its 95% interval and the pairs it rests
    # on, or that the evidence cannot support the target, or that there is no threshold
    basis = thr.get("statement") or ", ".join(f"{k} {v}" for k, v in thr.items()
                                              if k != "value" and v is not None and not isinstance(v, (dict, list)))
    weights = manifest.get("weights", {})
    gait = weights.get("gait", {})
    idents = {i["name"]: i for i in manifest.get("identities", [])}
    facts = [("run", run.name.split(".partial")[0].lstrip(".")), ("created", manifest.get("created", "")),
             ("device", manifest.get("device", "")),
             ("gait model", f"{gait.get('arch', '?')} ({Path(str(gait.get('path', ''))).name}), {gait.get('metric', '')}"),
             ("threshold", f"{thr.get('basis', '')} — {basis}" if thr else "—"),
             ("gallery", manifest.get("gallery_db") or next((v["path"] for v in manifest["videos"]
                                                             if v["role"] == "gallery"), "")),
             ("identities", str(len(idents)))]
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{csp_meta(SCRIPT)}<title>allinone run "
           f"{e(facts[0][1])}</title><style>{CSS}</style></head><body data-video-status='pending'>",
           f"<h1>Who walked by</h1><div class='muted'>allinone {e(str(manifest.get('allinone_version', '')))} · "
           "open the result videos below, or click a person's timeline</div>",
           "<div class='facts'>" + "".join(f"<div><b>{e(k)}</b>{e(str(v))}</div>" for k, v in facts) + "</div>"]
    by_video: dict[str, list[dict]] = {}
    for m in manifest.get("matches", []):
        by_video.setdefault(m["probe_video"], []).append(m)
    for n, v in enumerate(manifest["videos"]):
        if v["role"] == "probe":
            out.append(_video_section(run, v, f"video-{n}", by_video.get(v["name"], []), idents, t))
    out.append("<h2>Gallery identities</h2><div class='tiles'>" + "".join(
        f"<div class='tile'><div class='pics'>{_img(run, i.get('crop'), '')}{_img(run, i.get('gei'), '', gei=True)}"
        f"</div><b>{e(i['name'])}</b><br>{len(i['tracks'])} track(s)</div>" for i in idents.values()) + "</div>")
    drawn = heatmap(manifest, run / HEATMAP, run)
    if drawn:
        alt = "probe × gallery distances" if drawn == "heatmap" else "each probe track's nearest distance"
        out.append(f"<h2>Distances</h2><img alt='{alt}' src='{_data_uri(run / HEATMAP)}'>")
    stages = ["decode_wait", "detect", "track", "crop", "segment", "align", "embed", "render", "total"]
    out.append("<h2>Timings (s)</h2><table><tr><th>video</th>" + "".join(f"<th>{s}</th>" for s in stages)
               + "<th>frames/s</th></tr>" + "".join(
                   f"<tr><td>{e(v['name'])}</td>" + "".join(
                       f"<td>{v.get('timings_s', {}).get(s, 0):.2f}</td>" for s in stages)
                   + f"<td>{v.get('end_to_end_fps') or '—'}</td></tr>" for v in manifest["videos"]) + "</table>")
    models = "".join(f"<tr><td>{e(k)}</td><td style='text-align:left'>{e(str(w.get('path')))}</td>"
                     f"<td style='text-align:left'>{e(str(w.get('sha256', ''))[:16])}</td></tr>"
                     for k, w in weights.items())
    out.append(f"<h2>Models</h2><table><tr><th>stage</th><th>file</th><th>sha256</th></tr>{models}</table>")
    out.append(f"{inline_script(SCRIPT)}</body></html>")
    return "\n".join(out)


def write_report(run: Path, manifest: dict) -> str:
    """Write report.html (and heatmap.png) into the run folder; returns the report's run-relative path."""
    text = render_report(run, manifest)
    (run / REPORT).write_text(text, encoding="utf-8")
    return REPORT


__all__ = ["heatmap", "render_report", "write_report"]
