"""python main.py calibrate --lr: a score-to-LR model fitted on an evaluate folder, with its validation figures.

Writes a folder (``--output``/``--name``, default ``output/lr-<method>-<evaluation>``) holding ``lr_model.json``
(the fit, bounded by ELUB, on all pairs), ``validation.json`` (Cllr, Cllr_min, Cllr_cal, EER, misleading rates of
held-out LRs from k-fold cross-validation by identity), ``tippett.png`` and ``ece.png``. ``evaluate --lr-model``
reuses ``write_validation`` to measure a model on another evaluation.
"""
from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from allinone.commands.args import Parser
from allinone.errors import UserError, reports_user_errors

log = logging.getLogger(__name__)

MODEL_FILE = "lr_model.json"


def calibrate_lr_parser() -> argparse.ArgumentParser:
    from allinone.commands.args import int_in_range
    p = Parser(prog="python main.py calibrate --lr",
                                description="Fit a score-to-likelihood-ratio model on an evaluate folder's "
                                            "embeddings (every pair of sequences: mated = same label) and validate "
                                            "it by cross-validation over identities.")
    p.add_argument("--lr", action="store_true", required=True, help="fit an LR model (this command)")
    p.add_argument("--evaluation", type=Path, required=True, metavar="DIR", help="an evaluate output folder")
    p.add_argument("--method", choices=["logistic", "pav"], default="logistic",
                   help="logistic regression (default) or PAV / isotonic regression; both ELUB-bounded")
    p.add_argument("--folds", type=int_in_range(4), default=10, metavar="K",
                   help="cross-validation folds of identities (default 10, at most one per identity)")
    p.add_argument("--output", type=Path, default=Path("output"), metavar="DIR")
    p.add_argument("--name", default=None, metavar="NAME", help="folder name (default lr-<method>-<evaluation>)")
    p.add_argument("--quiet", action="store_true")
    return p


def read_evaluation(evaluation: Path) -> tuple[dict, dict[str, np.ndarray], Path]:
    """metrics.json and embeddings.npz of an evaluate folder (a UserError naming what is missing)."""
    mfile, efile = evaluation / "metrics.json", evaluation / "embeddings.npz"
    if not mfile.is_file():
        raise UserError("no metrics.json here: not an evaluate output folder", evaluation)
    if not efile.is_file():
        raise UserError("no embeddings.npz here: not an evaluate output folder", evaluation)
    from allinone.errors import read_json
    m = read_json(mfile, "evaluation metrics")
    try:
        with np.load(efile) as z:
            emb = {k: z[k] for k in ("embeddings", "labels", "types", "views")}
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"embeddings.npz is not readable ({exc})", efile) from None
    if emb["embeddings"].ndim != 3 or len(emb["embeddings"]) != len(emb["labels"]):
        raise UserError(f"embeddings.npz holds embeddings of shape {emb['embeddings'].shape}, not [n, c, p]", efile)
    return m, emb, efile


def embedding_of(m: dict) -> str:
    """The embedding field an evaluation used (embed_1 unless it says otherwise)."""
    return str(m.get("embedding") or m.get("model", {}).get("embedding") or "embed_1")


def conditions(emb: dict[str, np.ndarray]) -> dict:
    """What the data covered: identities, sequence types and views, with counts."""
    def count(a):
        u, c = np.unique(np.asarray(a).astype(str), return_counts=True)
        return {str(k): int(n) for k, n in zip(u, c)}
    return {"identities": len(set(np.asarray(emb["labels"]).astype(str))), "sequences": int(len(emb["labels"])),
            "types": count(emb["types"]), "views": count(emb["views"])}


def write_validation(out: Path, lrs: np.ndarray, pairs, title: str, case_log10_lr: float | None = None) -> dict:
    """validation figures of held-out ``lrs`` over ``pairs``: returns the summary (with Tippett curves) and writes
    tippett.png and ece.png into ``out``."""
    from allinone.evaluate import validation as v
    summary = v.validate(lrs, pairs.mated, pairs.weight)
    curves = v.tippett(lrs, pairs.mated, pairs.weight)
    v.tippett_plot(curves, out / "tippett.png", case_log10_lr, title=f"Tippett plot: {title}")
    v.ece_plot(lrs, pairs.mated, pairs.weight, out / "ece.png", title=f"ECE: {title}")
    o, ece = v.ece_curve(lrs, pairs.mated, pairs.weight, np.linspace(-2.5, 2.5, 11))
    summary["ece"] = {"log10_prior_odds": [round(float(x), 3) for x in o],
                      "bits": [None if not np.isfinite(x) else round(float(x), 6) for x in ece]}
    summary["tippett"] = curves
    summary["files"] = {"tippett": "tippett.png", "ece": "ece.png"}
    return summary


def fit_from_evaluation(evaluation: Path, method: str, folds: int, out_dir: Path) -> tuple[dict, dict]:
    """(model record, validation summary); plots written to ``out_dir``."""
    from allinone.evaluate.lr import cross_validated_lrs, fit_lr, pairs_from_embeddings
    from allinone.io.run_folder import sha256_path
    m, emb, efile = read_evaluation(evaluation)
    metric = m.get("model", {}).get("metric")
    if metric not in ("euc", "cos"):
        raise UserError(f"metrics.json names no usable metric ({metric!r})", evaluation / "metrics.json")
    pairs = pairs_from_embeddings(emb["embeddings"], emb["labels"], metric)
    n_mated = int(pairs.mated.sum())
    if n_mated == 0 or n_mated == len(pairs):
        raise UserError("this evaluation has no mated or no non-mated pairs (one identity, or one sequence each)",
                        evaluation)
    try:
        lrs, how = cross_validated_lrs(pairs, method, folds)
    except ValueError as exc:
        raise UserError(f"cannot validate: {exc}", evaluation) from None
    validation = write_validation(out_dir, lrs, pairs, f"{method}, {evaluation.name} (held out by identity)")
    validation["cross_validation"] = how
    fit = fit_lr(pairs.distance, pairs.mated, pairs.weight, method, units=pairs.units())
    cond = conditions(emb)
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": m["model"].get("path"), "checkpoint_sha256": m["model"]["sha256"],
        "arch": m["model"].get("arch"), "metric": metric, "embedding": embedding_of(m),
        "frames_limit": m.get("frames_limit"),
        "score": "gait distance (smaller = more similar): " + ("OpenGait's mean over parts of the Euclidean distance"
                                                               if metric == "euc" else "1 - mean cosine similarity"),
        "propositions": {"Hp": "the two walkers are the same person", "Hd": "the two walkers are different people"},
        "data": {"name": evaluation.name, "evaluation": str(evaluation), "dataset": m.get("dataset", {}).get("root"),
                 "protocol": m.get("protocol"), "embeddings_sha256": sha256_path(efile),
                 "pairs": {"mated": n_mated, "non_mated": int(len(pairs) - n_mated)},
                 "distance_range": [float(pairs.distance.min()), float(pairs.distance.max())],
                 "weighting": "each pair weighs 1 / (pairs of its identity pair): every identity counts once among "
                              "mated pairs, every identity pair once among non-mated pairs",
                 **cond, "identity_labels": list(pairs.identities)},
        "fit": fit.to_json(),
        "validation": {k: validation[k] for k in ("cllr", "cllr_min", "cllr_cal", "eer", "misleading",
                                                  "log10_lr_range", "cross_validation", "tippett")},
    }
    return record, validation


@reports_user_errors
def calibrate_lr_command(argv: list[str]) -> int:
    args = calibrate_lr_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    from allinone.decide.lr_model import write_lr_model
    from allinone.io.run_folder import RunWriter
    if not (args.evaluation / "metrics.json").is_file():
        raise UserError("no metrics.json here: not an evaluate output folder", args.evaluation)
    with RunWriter(args.output, args.name, default=f"lr-{args.method}-{args.evaluation.name}") as writer:
        record, validation = fit_from_evaluation(args.evaluation, args.method, args.folds, writer.dir)
        write_lr_model(writer.path(MODEL_FILE), record)
        out = writer.finalize_json("validation.json", {"model": MODEL_FILE, "method": args.method,
                                                       "data": record["data"]["name"], **validation})
    b = record["fit"]["bounds"]
    print(f"{args.method} LR model on {record['data']['pairs']['mated']} mated and "
          f"{record['data']['pairs']['non_mated']} non-mated pairs of {record['data']['identities']} identities; "
          f"LR bounds (ELUB) {b['lower_lr']:.3g} .. {b['upper_lr']:.3g}")
    print(f"held out ({validation['cross_validation']['k']}-fold by identity): Cllr {validation['cllr']:.4f}, "
          f"Cllr_min {validation['cllr_min']:.4f}, Cllr_cal {validation['cllr_cal']:.4f}, "
          f"EER {100 * validation['eer']:.2f} %")
    print(out / MODEL_FILE)
    return 0


def overlap_with_fit(record: dict, labels: np.ndarray, dataset_root: str | None,
                     embeddings_sha256: str | None) -> dict:
    """How far an evaluation is the LR model's own fitting data: the identities both hold (by label), whether the
    dataset root and the embeddings are the same. ``held_out`` only when no identity is shared: a pair of people the
    model was fitted on is an in-sample figure whatever the sequences."""
    data = record.get("data") or {}
    fitted = set(data.get("identity_labels") or [])
    here = set(np.asarray(labels).astype(str).tolist())
    shared = sorted(fitted & here)
    same_root = bool(dataset_root and data.get("dataset") and
                     Path(str(data["dataset"])).resolve() == Path(dataset_root).resolve())
    same_emb = bool(embeddings_sha256 and data.get("embeddings_sha256") == embeddings_sha256)
    known = bool(fitted)
    held_out = known and not shared and not same_emb
    if held_out:
        note = None
    elif not known:
        note = ("the model file lists no identity labels, so whether these people were in its fit is unknown: not "
                "shown to be held out")
    else:
        note = (f"not held out: {len(shared)} of these {len(here)} identities were in the model's fit"
                + (" (the same embeddings)" if same_emb else "") + (", from the same dataset" if same_root else "")
                + "; these figures are in-sample")
    return {"held_out": held_out, "shared_identities": len(shared), "identities": len(here),
            "same_dataset_root": same_root, "same_embeddings": same_emb, "note": note}


def evaluation_lr_outputs(out_dir: Path, model_path: Path, features: np.ndarray, labels: np.ndarray, metric: str,
                          checkpoint_sha256: str, embedding: str = "embed_1",
                          embeddings_sha256: str | None = None, dataset_root: str | None = None) -> dict:
    """``evaluate --lr-model``: the model's LRs on every pair of this evaluation, their figures (lr_tippett.png,
    lr_ece.png) and summary, with whether these people were held out from the model's fit (overlap_with_fit; a
    warning when not); the model is refused if it is for another checkpoint, metric or embedding."""
    from allinone.decide.lr_model import read_lr_model
    from allinone.evaluate.lr import pairs_from_embeddings
    model = read_lr_model(model_path)
    model.check_for(checkpoint_sha256, metric, embedding)
    pairs = pairs_from_embeddings(features, labels, metric)
    if pairs.mated.all() or not pairs.mated.any():
        raise UserError("this evaluation has no mated or no non-mated pairs to validate the LR model on", out_dir)
    lrs = model.fit.lr(pairs.distance)
    tmp = out_dir / "lr-validation"
    tmp.mkdir(exist_ok=True)
    summary = write_validation(tmp, lrs, pairs, f"{model_path.name} on this evaluation")
    for name in ("tippett.png", "ece.png"):
        (tmp / name).replace(out_dir / f"lr_{name}")
    tmp.rmdir()
    summary["files"] = {"tippett": "lr_tippett.png", "ece": "lr_ece.png"}
    overlap = overlap_with_fit(model.record, labels, dataset_root, embeddings_sha256)
    if overlap["note"]:
        log.warning("%s: %s", model_path, overlap["note"])
    summary["model"] = {"file": str(model_path), "method": model.fit.method,
                        "fitted_on": model.record.get("data", {}).get("name"), **overlap}
    return summary


__all__ = ["calibrate_lr_command", "calibrate_lr_parser", "evaluation_lr_outputs", "fit_from_evaluation",
           "overlap_with_fit", "read_evaluation", "write_validation"]
