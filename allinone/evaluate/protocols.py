"""OpenGait's evaluation protocols on embeddings, with the numbers its evaluator gives
(opengait/evaluation/evaluator.py and metric.py), and custom protocol files.

Every protocol returns closed-set results per condition (OpenGait's headline numbers, percent) and the probe /
gallery masks of each condition, over which the open-set error rates are computed (openset.py).

Where OpenGait's evaluator is undefined (a probe view with no probe sequences divides by zero; a gallery view with
no sequences makes torch.topk fail), the cell is NaN here, listed in ``empty_cells``, and left out of the averages.
Ties in distance go to the gallery sequence that comes first in dataset order.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allinone.errors import UserError, read_json
from allinone.decide.distance import distance_matrix


@dataclass
class Condition:
    """One probe condition: which sequences are its probes and which its gallery."""

    name: str
    probe: np.ndarray  # bool mask over the sequences
    gallery: np.ndarray


@dataclass
class ProtocolResult:
    closed_set: dict[str, dict] = field(default_factory=dict)  # condition → {"rank1": %, ...}
    conditions: list[Condition] = field(default_factory=list)
    empty_cells: list[str] = field(default_factory=list)
    table: list[str] = field(default_factory=list)  # the printed lines OpenGait users expect
    files: dict[str, str] = field(default_factory=dict)  # extra outputs (GREW submission)


@dataclass
class Data:
    feature: np.ndarray  # [n, c, p]
    label: np.ndarray  # str [n]
    type: np.ndarray
    view: np.ndarray
    metric: str


def _rank_hits(dist: np.ndarray, probe_y: np.ndarray, gallery_y: np.ndarray, num_rank: int) -> np.ndarray:
    """OpenGait's per-cell accuracy: percent of probes whose label is among the num_rank nearest, rounded to 2
    decimals exactly as np.round(np.sum(np.cumsum(hit, 1) > 0, 0) * 100 / n, 2)."""
    idx = np.argsort(dist, axis=1, kind="stable")[:, :num_rank]
    hit = np.reshape(probe_y, [-1, 1]) == gallery_y[idx[:, 0:num_rank]]
    return np.round(np.sum(np.cumsum(hit, 1) > 0, 0) * 100 / dist.shape[0], 2)


def de_diag(acc: np.ndarray) -> np.ndarray:
    """Per probe view, the mean over gallery views other than its own (OpenGait's de_diag, each_angle=True), NaN
    cells left out."""
    a = acc.astype(np.float64).copy()
    np.fill_diagonal(a, np.nan)
    with np.errstate(all="ignore"):
        return np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in a])


def _nanmean(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def type_masks(d: Data, probe_sets: dict[str, list[str]], gallery_set: list[str], substring: bool = False):
    """Probe masks per condition and the gallery mask: types in the lists (OpenGait's np.isin), or containing one
    of them (its SUSTech1K variant, np.char.find)."""
    def match(pats: list[str]) -> np.ndarray:
        if substring:
            return np.any([np.char.find(d.type.astype(str), p) >= 0 for p in pats], axis=0)
        return np.isin(d.type, pats)
    return {c: match(p) for c, p in probe_sets.items()}, match(gallery_set)


def single_view_gallery(d: Data, probe_masks: dict[str, np.ndarray], gallery_mask: np.ndarray, *,
                        num_rank: int = 1, drop_views: tuple[str, ...] = (),
                        exclude_identical: bool = True) -> ProtocolResult:
    """OpenGait's single_view_gallery_evaluation: rank-k per (probe view, gallery view) cell, then per probe view
    the mean over the other gallery views (identical view excluded), then the mean over probe views."""
    views = [v for v in sorted(np.unique(d.view)) if v not in drop_views]
    n_v = len(views)
    res = ProtocolResult()
    for cond, p_all in probe_masks.items():
        acc = np.full((n_v, n_v, num_rank), np.nan)
        for v1, pv in enumerate(views):
            pm = p_all & (d.view == pv)
            for v2, gv in enumerate(views):
                gm = gallery_mask & (d.view == gv)
                if not pm.any() or gm.sum() < num_rank:
                    res.empty_cells.append(f"{cond}: probe view {pv} x gallery view {gv}")
                    continue
                dist = distance_matrix(d.feature[pm], d.feature[gm], d.metric)
                acc[v1, v2, :] = _rank_hits(dist, d.label[pm], d.label[gm], num_rank)
        out = {}
        for r in range(num_rank):
            per_view = de_diag(acc[:, :, r]) if exclude_identical else np.array(
                [_nanmean(row) for row in acc[:, :, r]])
            out[f"rank{r + 1}"] = _nanmean(per_view)
            out[f"rank{r + 1}_per_view"] = {v: (None if not np.isfinite(x) else float(x))
                                            for v, x in zip(views, per_view)}
        res.closed_set[cond] = out
        res.conditions.append(Condition(cond, p_all, gallery_mask))
        res.table.append(f"{cond}@R1: {out['rank1']:.2f}%  per probe view: "
                         + " ".join(f"{v}:{x:.2f}" if x is not None else f"{v}:-"
                                    for v, x in out["rank1_per_view"].items()))
    return res


def _cmc_ap_inp(rows, max_rank: int):
    """From each probe's 0/1 hit vector in ranked order (probes without a hit are skipped, as OpenGait does): the CMC
    averaged over the valid probes, and each one's AP and INP (metric.py's evaluate_rank / evaluate_many)."""
    all_cmc, all_ap, all_inp = [], [], []
    for raw in rows:
        if not np.any(raw):
            continue
        cmc = raw.cumsum()
        last = np.max(np.where(raw == 1))
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        prec = raw.cumsum() / (np.arange(len(raw)) + 1.0) * raw
        all_ap.append(prec.sum() / raw.sum())
    if not all_cmc:
        raise UserError("no probe identity appears in the gallery: nothing to rank")
    return np.asarray(all_cmc, np.float32).sum(0) / len(all_cmc), all_ap, all_inp


def evaluate_rank(dist: np.ndarray, p_lbls: np.ndarray, g_lbls: np.ndarray, max_rank: int = 50):
    """OpenGait's evaluate_rank (Gait3D): CMC over valid probes, AP and INP per valid probe."""
    matches = (g_lbls[np.argsort(dist, axis=1)] == p_lbls[:, np.newaxis]).astype(np.int32)
    return _cmc_ap_inp(matches, min(max_rank, dist.shape[1]))


def evaluate_many(dist, q_pids, g_pids, q_cams, g_cams, max_rank: int = 50):
    """OpenGait's evaluate_many (CCPG): like evaluate_rank with same-id-same-camera gallery entries removed."""
    indices = np.argsort(dist, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    keep = ~((g_pids[indices] == q_pids[:, None]) & (g_cams[indices] == q_cams[:, None]))
    cmc, ap, inp = _cmc_ap_inp((matches[q][keep[q]] for q in range(len(dist))), min(max_rank, dist.shape[1]))
    return cmc, float(np.mean(ap)), float(np.mean(inp))


CASIA_B = ({"NM": ["nm-05", "nm-06"], "BG": ["bg-01", "bg-02"], "CL": ["cl-01", "cl-02"]},
           ["nm-01", "nm-02", "nm-03", "nm-04"])
OUMVLP = ({"NM": ["00"]}, ["01"])
CASIA_E = ({cond: [f"{q}-scene{s}-{c}-{k}" for s in ("2", "3", "3_s") for q in ("H", "L") for k in ("1", "2")]
            for cond, c in (("NM", "nm"), ("BG", "bg"), ("CL", "cl"))},
           ["H-scene1-nm-1", "H-scene1-nm-2", "L-scene1-nm-1", "L-scene1-nm-2"])
SUSTECH1K = ({"Normal": ["01-nm"], "Bag": ["bg"], "Clothing": ["cl"], "Carrying": ["cr"], "Umberalla": ["ub"],
              "Uniform": ["uf"], "Occlusion": ["oc"], "Night": ["nt"], "Overall": ["01", "02", "03", "04"]},
             ["00-nm"])
CCPG = {"CL": (["U0_D0_BG", "U0_D0"], ["U1_D1", "U2_D2", "U3_D3"]), "UP": (["U3_D3"], ["U0_D3"]),
        "DN": (["U1_D0"], ["U1_D1"]), "BG": (["U0_D0_BG"], ["U0_D0"])}


def casia_b(d: Data, **_) -> ProtocolResult:
    return single_view_gallery(d, *type_masks(d, *CASIA_B))


def oumvlp(d: Data, **_) -> ProtocolResult:
    return single_view_gallery(d, *type_masks(d, *OUMVLP))


def casia_e(d: Data, **_) -> ProtocolResult:
    return single_view_gallery(d, *type_masks(d, *CASIA_E), drop_views=("270",))


def sustech1k(d: Data, **_) -> ProtocolResult:
    return single_view_gallery(d, *type_masks(d, *SUSTECH1K, substring=True), num_rank=5)


def gait3d(d: Data, partition: dict | None = None, **_) -> ProtocolResult:
    probes = set((partition or {}).get("PROBE_SET") or [])
    if not probes:
        raise UserError("gait3d needs the partition's PROBE_SET (Gait3D.json lists the probe sequences)")
    pm = np.array(["-".join([a, b, c]) in probes for a, b, c in zip(d.label, d.type, d.view)])
    if not pm.any() or pm.all():
        raise UserError("gait3d: the PROBE_SET must name some, but not all, of the test sequences")
    dist = distance_matrix(d.feature[pm], d.feature[~pm], d.metric)
    cmc, ap, inp = evaluate_rank(dist, d.label[pm], d.label[~pm])
    out = {f"rank{r}": float(cmc[r - 1] * 100) for r in (1, 5, 10) if r <= len(cmc)}
    out.update({"mAP": float(np.mean(ap) * 100), "mINP": float(np.mean(inp) * 100)})
    res = ProtocolResult(closed_set={"all": out}, conditions=[Condition("all", pm, ~pm)])
    res.table.append("  ".join(f"{k}: {v:.2f}%" for k, v in out.items()))
    return res


def ccpg(d: Data, **_) -> ProtocolResult:
    view = np.array([v.split("_")[0] for v in d.view])
    views = sorted(set(view.tolist()))
    res = ProtocolResult()
    for cond, (probe_types, gallery_types) in CCPG.items():
        gm, pm = np.isin(d.type, gallery_types), np.isin(d.type, probe_types)
        if not gm.any() or not pm.any():
            res.empty_cells.append(f"{cond}: no probe or no gallery sequences")
            continue
        dist = distance_matrix(d.feature[pm], d.feature[gm], d.metric)
        cmc, m_ap, m_inp = evaluate_many(dist, d.label[pm], d.label[gm], view[pm], view[gm])
        acc = np.full((len(views), len(views)), np.nan)
        for v1, pv in enumerate(views):
            for v2, gv in enumerate(views):
                p2, g2 = pm & (view == pv), gm & (view == gv)
                if not p2.any() or not g2.any():
                    continue
                dd = distance_matrix(d.feature[p2], d.feature[g2], d.metric)
                acc[v1, v2] = _rank_hits(dd, d.label[p2], d.label[g2], 1)[0]
        res.closed_set[cond] = {"rank1": float(cmc[0] * 100), "mAP": m_ap * 100, "mINP": m_inp * 100,
                                "rank1_cross_view": _nanmean(de_diag(acc))}
        res.conditions.append(Condition(cond, pm, gm))
        c = res.closed_set[cond]
        res.table.append(f"{cond}: rank-1 {c['rank1']:.3f}%  mAP {c['mAP']:.3f}%  mINP {c['mINP']:.3f}%  "
                         f"rank-1 cross-view {c['rank1_cross_view']:.3f}%")
    return res


def grew(d: Data, out_dir: Path | None = None, **_) -> ProtocolResult:
    """GREW: rank-1/5/10/20 of probes '02' against gallery '01' where the test labels are known; with the
    unlabelled probes '03', OpenGait's submission CSV (gallery '01' + '02', top 20 labels per probe video)."""
    res = ProtocolResult()
    gm, pm = np.isin(d.type, ["01"]), np.isin(d.type, ["02"])
    if gm.any() and pm.any():
        dist = distance_matrix(d.feature[pm], d.feature[gm], d.metric)
        k = min(20, int(gm.sum()))
        acc = _rank_hits(dist, d.label[pm], d.label[gm], k)
        out = {f"rank{r}": float(acc[r - 1]) for r in (1, 5, 10, 20) if r <= k}
        res.closed_set["all"] = out
        res.conditions.append(Condition("all", pm, gm))
        res.table.append("  ".join(f"{k}: {v:.3f}%" for k, v in out.items()))
    sm, qm = np.isin(d.type, ["01", "02"]), np.isin(d.type, ["03"])
    if qm.any() and sm.any() and out_dir is not None:
        dist = distance_matrix(d.feature[qm], d.feature[sm], d.metric)
        idx = np.argsort(dist, axis=1, kind="stable")[:, :20]
        gy, qy = d.label[sm], d.view[qm]
        path = out_dir / "grew_submission.csv"
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("videoId," + ",".join(f"rank{i}" for i in range(1, 21)) + "\n")
            for i in range(len(idx)):
                fh.write(",".join([str(qy[i]), *(str(int(x)) for x in gy[idx[i]])]) + "\n")
        res.files["grew_submission"] = path.name
        res.table.append(f"GREW submission: {path.name} ({len(idx)} probe videos)")
    if not res.conditions and not res.files:
        raise UserError("grew: no '01' gallery with '02' probes, nor '03' probes for a submission")
    return res


def spec_mask(sel: dict, types, views) -> np.ndarray:
    """The sequences a protocol file's selection ({"types": [...], "views": [...]}, fnmatch patterns) takes."""
    t = np.array([any(fnmatch.fnmatchcase(str(x), p) for p in sel.get("types", ["*"])) for x in types], bool)
    v = np.array([any(fnmatch.fnmatchcase(str(x), p) for p in sel.get("views", ["*"])) for x in views], bool)
    return t & v


def custom(d: Data, spec: dict, **_) -> ProtocolResult:
    """A protocol file: gallery and probe type/view patterns (fnmatch), per-view cells with the identical view
    excluded or not, or one pooled gallery."""
    def mask(sel: dict) -> np.ndarray:
        return spec_mask(sel, d.type, d.view)

    gal = mask(spec["gallery"])
    if spec.get("per_view", True):
        return single_view_gallery(d, {c: mask(sel) for c, sel in spec["probes"].items()}, gal,
                                   exclude_identical=spec.get("exclude_identical_view", True))
    res = ProtocolResult()
    for cond, sel in spec["probes"].items():
        pm = mask(sel)
        if not pm.any() or not gal.any():
            res.empty_cells.append(f"{cond}: no probe or no gallery sequences")
            continue
        dist = distance_matrix(d.feature[pm], d.feature[gal], d.metric)
        if spec.get("exclude_identical_view", False):
            same = d.view[pm][:, None] == d.view[gal][None, :]
            dist = np.where(same, np.inf, dist)
        k = min(5, int(gal.sum()))
        acc = _rank_hits(dist, d.label[pm], d.label[gal], k)
        res.closed_set[cond] = {f"rank{r}": float(acc[r - 1]) for r in (1, 5) if r <= k}
        res.conditions.append(Condition(cond, pm, gal))
        res.table.append(f"{cond}@R1: {acc[0]:.2f}%")
    return res


def load_custom(path: Path) -> dict:
    spec = read_json(path, "protocol JSON")
    ok = isinstance(spec, dict) and isinstance(spec.get("gallery"), dict) and isinstance(spec.get("probes"), dict) \
        and spec["probes"] and all(isinstance(v, dict) for v in spec["probes"].values())
    if not ok:
        raise UserError('a protocol file needs {"gallery": {"types": [...], "views": [...]}, "probes": {"NAME": '
                        '{"types": [...], "views": [...]}, ...}}', path)
    for where, sel in [("gallery", spec["gallery"]), *((f"probes.{k}", v) for k, v in spec["probes"].items())]:
        for key in ("types", "views"):
            pats = sel.get(key, ["*"])
            if not isinstance(pats, list) or not pats or not all(isinstance(x, str) for x in pats):
                raise UserError(f"protocol JSON: {where}.{key} must be a non-empty list of name patterns (strings), "
                                f"got {pats!r}"[:300], path)
    for key in ("per_view", "exclude_identical_view"):
        if key in spec and not isinstance(spec[key], bool):
            raise UserError(f"protocol JSON: {key} must be true or false, got {spec[key]!r}"[:300], path)
    return spec


PROTOCOLS = {"casia-b": casia_b, "oumvlp": oumvlp, "casia-e": casia_e, "sustech1k": sustech1k, "gait3d": gait3d,
             "ccpg": ccpg, "grew": grew}
