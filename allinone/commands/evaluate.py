"""python main.py evaluate / calibrate.

Over 400 lines because calibrate reads exactly what evaluate writes (metrics.json, searches.npz, impostors.npz):
the writer and the reader of those files are kept side by side. The LR calibration is calibrate_lr.py."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from allinone.commands.args import Parser
from allinone.config import GaitConfig
from allinone.errors import UserError, print_error, read_json, reports_user_errors
from allinone.decide.distance import distance_matrix
from allinone.evaluate.tables import cmc_curve, impostor_tables

log = logging.getLogger(__name__)



def _dataset_args(p: argparse.ArgumentParser, required: bool) -> None:
    from allinone.commands.args import int_in_range
    from allinone.gait.registry import ARCHS
    p.add_argument("--dataset", type=Path, required=required, metavar="ROOT",
                   help="OpenGait-layout dataset: ROOT/<id>/<type>/<view>/*.pkl")
    p.add_argument("--partition", type=Path, required=required, metavar="JSON",
                   help="partition JSON with TEST_SET (only those ids are evaluated)")
    p.add_argument("--protocol", required=required, metavar="NAME|FILE",
                   help="casia-b, oumvlp, casia-e, sustech1k, gait3d, ccpg, grew, or a protocol JSON file")
    p.add_argument("--gait-model", type=Path, required=required, metavar="CKPT",
                   help="OpenGait checkpoint (.pt) or exported .onnx")
    p.add_argument("--gait-arch", default="auto", choices=["auto", *ARCHS], metavar="NAME")
    p.add_argument("--trust-checkpoint", action="store_true")
    p.add_argument("--embedding", choices=["auto", "embed_1", "embed_2"], default="auto",
                   help="embed_1, embed_2 (DeepGaitV2's BNNeck output), or auto: as OpenGait's config sets use_emb2")
    p.add_argument("--metric", choices=["auto", "euc", "cos"], default="auto")
    p.add_argument("--frames-limit", type=int_in_range(1), default=GaitConfig.max_frames, metavar="N",
                   help="frames per sequence, the first N in order (OpenGait's frames_all_limit, default 720)")
    p.add_argument("--batch", type=int_in_range(1), default=None, metavar="N",
                   help="sequences of equal length per forward (default: 8 on CUDA, 1 on the CPU, where batching "
                        "measured slower)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="embedding cache folder (default: OUTPUT/.embed-cache)")
    p.add_argument("--output", type=Path, default=Path("output"), metavar="DIR")
    p.add_argument("--name", default=None, metavar="NAME")
    p.add_argument("--quiet", action="store_true")


def evaluate_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python main.py evaluate",
                                description="Score a gait checkpoint on an OpenGait-format dataset: OpenGait's "
                                            "closed-set numbers, open-set error rates, plots.")
    _dataset_args(p, required=True)
    p.add_argument("--lr-model", type=Path, default=None, metavar="FILE",
                   help="an LR model from calibrate --lr: also write its Cllr, ECE and Tippett figures on this "
                        "evaluation's pairs (lr_validation.json, lr_tippett.png, lr_ece.png)")
    return p


def _protocol(name: str):
    from allinone.evaluate.protocols import PROTOCOLS, load_custom
    if name in PROTOCOLS:
        return name, PROTOCOLS[name], None
    path = Path(name)
    if path.suffix.lower() == ".json" or path.exists():
        spec = load_custom(path)
        return spec.get("name", path.stem), None, spec
    raise UserError(f"unknown protocol {name!r} (expected {', '.join(PROTOCOLS)} or a protocol JSON file)")


@dataclass(frozen=True)
class _Plan:
    """What an evaluation runs, checked against the dataset before the model loads."""
    partition: dict
    protocol: str  # the built-in protocol's name, or the protocol file's
    proto_fn: Callable | None  # a built-in protocol; None for a protocol file
    spec: dict | None  # a protocol file's contents
    sequences: list


@dataclass(frozen=True)
class _Embedded:
    """The test set embedded, with what the model was."""
    emb: Any  # allinone.evaluate.embed.Embedded
    arch: str
    metric: str
    embedding: str
    sha: str  # the checkpoint's sha256
    device: str


@dataclass
class _Scores:
    """Per condition: verification, open-set identification, CMC, (mated, non-mated) distances and the distance at
    FPIR 0.01; ``npz``: every condition's searches, as searches.npz stores them."""
    verification: dict = field(default_factory=dict)
    open_set: dict = field(default_factory=dict)
    cmc: dict = field(default_factory=dict)
    pairs: dict = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)
    npz: dict[str, np.ndarray] = field(default_factory=dict)


def run_evaluation(args: argparse.Namespace) -> tuple[Path, dict]:
    """Embed the test set, score the protocol's conditions and write the evaluation folder -> (its metrics.json,
    the metrics with the console table)."""
    from allinone.io.run_folder import RunWriter
    from allinone.evaluate.protocols import Data, custom

    plan = _checked_plan(args)
    default_name = f"eval-{plan.protocol}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    with RunWriter(args.output, args.name, default=default_name) as writer:
        e = _embed(args, plan.sequences)
        seqs = e.emb.sequences
        d = Data(e.emb.embeddings, np.array([s.label for s in seqs]), np.array([s.type for s in seqs]),
                 np.array([s.view for s in seqs]), e.metric)
        res = custom(d, plan.spec) if plan.spec is not None \
            else plan.proto_fn(d, partition=plan.partition, out_dir=writer.dir)
        res.conditions = _selected_conditions(res, plan.protocol, len(seqs), args.dataset)
        scores = _score(res.conditions, d, e.metric)
        metrics = _metrics(args, plan, e, res, scores)
        _write_arrays_and_plots(writer, d, res, scores, e.metric)
        if getattr(args, "lr_model", None) is not None:
            metrics["lr_validation"] = _lr_validation(writer, args, d, e, metrics)
        table = format_table(metrics, res.table)
        writer.path("table.txt").write_text(table + "\n", encoding="utf-8")
        metrics = finite_or_null(metrics)  # undefined cells (NaN) are null: metrics.json is strict JSON
        out = writer.finalize_json("metrics.json", metrics)
    return out, metrics | {"table": table}


def _checked_plan(args: argparse.Namespace) -> _Plan:
    """The partition, protocol and test sequences, refused (UserError) where the protocol selects nothing, the
    model file is not one, or the LR model is missing or damaged: all before any model loads."""
    from allinone.gait.backends import check_model_file
    from allinone.evaluate.dataset import list_sequences, read_partition

    partition = read_partition(args.partition)
    proto_name, proto_fn, spec = _protocol(args.protocol)
    sequences = list_sequences(args.dataset, partition)
    if spec is not None:  # a protocol file is checked against the dataset before the model loads
        _check_selects(spec, sequences, Path(args.protocol))
    else:  # and a built-in one, on the sequences' labels, types and views alone
        _check_builtin_selects(proto_name, proto_fn, sequences, partition, args.dataset)
    check_model_file(args.gait_model)
    if getattr(args, "lr_model", None) is not None:
        from allinone.decide.lr_model import read_lr_model
        read_lr_model(args.lr_model)  # a missing or damaged file is refused before any embedding
    return _Plan(partition, proto_name, proto_fn, spec, sequences)


def _embed(args: argparse.Namespace, sequences: list) -> _Embedded:
    """Load the model and embed ``sequences`` through the embedding cache; a UserError when none could be read."""
    from allinone.gait.backends import embedder_for
    from allinone.io.devices import default_batch, resolve_device
    from allinone.io.run_folder import sha256_path
    from allinone.evaluate.embed import EmbeddingCache, embed_dataset

    device = resolve_device(args.device)
    embedder = embedder_for(args.gait_model, GaitConfig(model=str(args.gait_model), arch=args.gait_arch,
                                                        max_frames=args.frames_limit,
                                                        trust_checkpoint=args.trust_checkpoint,
                                                        embedding=args.embedding), device)
    embedding = getattr(embedder, "embedding", "embed_1")
    metric = embedder.metric if args.metric == "auto" else args.metric
    sha = sha256_path(args.gait_model)
    cache_dir = args.cache or (args.output / ".embed-cache")
    # the cache key: checkpoint, frames limit and (when not embed_1) the embedding
    cache = EmbeddingCache(cache_dir / f"{sha[:16]}-f{args.frames_limit}"
                           f"{'' if embedding == 'embed_1' else '-' + embedding}.sqlite")
    try:
        batch = default_batch(args.batch, device)
        emb = embed_dataset(args.dataset, sequences, embedder, cache, batch=batch, quiet=args.quiet)
    finally:
        cache.close()
    if not len(emb.sequences):
        raise UserError("no readable sequence in the test set", args.dataset)
    return _Embedded(emb, embedder.arch, metric, embedding, sha, device)


def _selected_conditions(res, protocol: str, n_embedded: int, root: Path) -> list:
    """The protocol's conditions that have both probe and gallery sequences (the others logged and left out); a
    UserError when none has and the protocol wrote no files of its own."""
    selected = [c for c in res.conditions if c.probe.any() and c.gallery.any()]
    if not selected and not res.files:
        raise UserError(f"protocol {protocol} selects nothing in this dataset: no condition has both probe and "
                        f"gallery sequences among the {n_embedded} embedded (check the dataset's type "
                        "names)", root)
    for c in res.conditions:
        if not any(c is x for x in selected):
            log.warning("protocol %s: condition %s selects no probe or no gallery sequence: left out",
                        protocol, c.name)
    return selected


def _score(conditions: list, d, metric: str) -> _Scores:
    """Each condition's probes searched against its gallery."""
    from allinone.evaluate import openset

    out = _Scores()
    for c in conditions:
        dist = distance_matrix(d.feature[c.probe], d.feature[c.gallery], metric)
        py, gy = d.label[c.probe], d.label[c.gallery]
        same = py[:, None] == gy[None, :]
        out.verification[c.name] = openset.verification(dist, same)
        s = openset.searches(dist, py, gy)
        out.open_set[c.name] = openset.identification(s)
        for k, v in s.items():
            out.npz[f"{c.name}.{k}"] = v
        out.cmc[c.name] = cmc_curve(dist, py, gy)
        out.pairs[c.name] = (dist[same].astype(np.float64), dist[~same].astype(np.float64))
        out.chosen[c.name] = (out.open_set[c.name].get("threshold@FPIR") or {}).get("0.01")
    return out


def _metrics(args: argparse.Namespace, plan: _Plan, e: _Embedded, res, scores: _Scores) -> dict:
    """metrics.json's contents (before the LR validation and before undefined cells become null)."""
    emb = e.emb
    speed = emb.computed / emb.seconds if emb.computed and emb.seconds > 0 else None
    return {
        "version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "protocol": plan.protocol, "protocol_spec": plan.spec,
        "dataset": {"root": str(args.dataset), "partition": str(args.partition),
                    "sequences": len(plan.sequences), "embedded": len(emb.sequences),
                    "test_ids_missing": _missing_ids(args.dataset, plan.partition),
                    "skipped": [{"file": f, "why": w} for f, w in emb.skipped]},
        "model": {"path": str(args.gait_model), "sha256": e.sha, "arch": e.arch, "metric": e.metric,
                  "embedding": e.embedding},
        "frames_limit": args.frames_limit, "device": e.device,
        "gallery_sequences": {c.name: int(np.count_nonzero(c.gallery)) for c in res.conditions},
        "closed_set": res.closed_set, "verification": scores.verification, "open_set": scores.open_set,
        "cmc": scores.cmc, "empty_cells": res.empty_cells,
        "speed": {"computed": emb.computed, "cached": emb.cached, "seconds": round(emb.seconds, 2),
                  "sequences_per_s": None if speed is None else round(speed, 3)},
        "files": {"embeddings": "embeddings.npz", "searches": "searches.npz", "impostors": "impostors.npz",
                  "cmc": "cmc.png",
                  "roc": "roc.png", "distances": "distances.png", "table": "table.txt", **res.files},
    }


def _write_arrays_and_plots(writer, d, res, scores: _Scores, metric: str) -> None:
    """embeddings.npz, searches.npz and impostors.npz (what calibrate reads), and the CMC, ROC and distance plots."""
    from allinone.evaluate import plots

    np.savez(writer.path("embeddings.npz"), embeddings=d.feature, labels=d.label, types=d.type, views=d.view)
    np.savez(writer.path("searches.npz"), **scores.npz)
    np.savez(writer.path("impostors.npz"), **impostor_tables(res.conditions, d.feature, d.label, metric))
    if scores.cmc:
        plots.cmc_plot({k: v for k, v in scores.cmc.items() if v}, writer.path("cmc.png"))
        plots.roc_plot(scores.pairs, writer.path("roc.png"))
        plots.histogram_plot(scores.pairs, scores.chosen, writer.path("distances.png"))


def _lr_validation(writer, args: argparse.Namespace, d, e: _Embedded, metrics: dict) -> dict:
    """--lr-model on this evaluation's pairs: its files written, and the summary metrics.json keeps of it."""
    from allinone.commands.calibrate_lr import embedding_of, evaluation_lr_outputs
    from allinone.io.run_folder import sha256_path

    lr_summary = evaluation_lr_outputs(writer.dir, args.lr_model, d.feature, d.label, e.metric, e.sha,
                                       embedding_of(metrics), sha256_path(writer.path("embeddings.npz")),
                                       str(args.dataset))
    writer.path("lr_validation.json").write_text(json.dumps(lr_summary, indent=2, allow_nan=False) + "\n",
                                                 encoding="utf-8")
    return {k: lr_summary[k] for k in ("cllr", "cllr_min", "cllr_cal", "eer")} | {
        "file": "lr_validation.json", "held_out": lr_summary["model"]["held_out"],
        "note": lr_summary["model"]["note"]}


def finite_or_null(obj):
    """``obj`` with every NaN or infinite float (an undefined cell, an empty mean) replaced by None."""
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _missing_ids(root: Path, partition: dict) -> int:
    present = {p.name for p in root.iterdir()}
    return sum(str(x) not in present for x in partition["TEST_SET"])


def _check_builtin_selects(name: str, proto_fn, sequences: list, partition: dict, root: Path) -> None:
    """A UserError when built-in protocol ``name`` selects nothing among ``sequences``: it is run once on
    placeholder features (which sequences it compares depends only on their labels, types and views), so a
    protocol that does not fit the dataset fails before the model loads, not after every sequence is embedded."""
    import tempfile
    import warnings

    from allinone.evaluate.protocols import Data
    d = Data(np.zeros((len(sequences), 1, 1), np.float32), np.array([s.label for s in sequences]),
             np.array([s.type for s in sequences]), np.array([s.view for s in sequences]), "euc")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = proto_fn(d, partition=partition, out_dir=Path(tmp))
    if not res.files and not any(c.probe.any() and c.gallery.any() for c in res.conditions):
        raise UserError(f"protocol {name} selects nothing in this dataset: no condition has both probe and gallery "
                        f"sequences among the {len(sequences)} test sequences (check the dataset's type names)", root)


def _check_selects(spec: dict, sequences, path: Path) -> None:
    """A UserError when a protocol file's gallery, or every one of its probe conditions, selects no sequence."""
    from allinone.evaluate.protocols import spec_mask
    types = [s.type for s in sequences]
    views = [s.view for s in sequences]
    if not spec_mask(spec["gallery"], types, views).any():
        raise UserError(f"protocol JSON: its gallery selects none of the {len(sequences)} test sequences", path)
    if not any(spec_mask(sel, types, views).any() for sel in spec["probes"].values()):
        raise UserError(f"protocol JSON: none of its probe conditions selects any of the {len(sequences)} test "
                        "sequences", path)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.2f}"


def _frac(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def format_table(m: dict, protocol_lines: list[str]) -> str:
    lines = [f"protocol {m['protocol']}, {m['model']['arch']} ({m['model']['metric']}, "
             f"{m['model'].get('embedding', 'embed_1')}), "
             f"{m['dataset']['embedded']} sequences"
             + (f", {len(m['dataset']['skipped'])} skipped" if m['dataset']['skipped'] else ""), ""]
    lines += protocol_lines
    lines += ["", "| condition | rank-1 % | TAR@FAR 0.1 | TAR@FAR 0.01 | TAR@FAR 0.001 | EER % | FNIR@FPIR 0.01 | "
              "FNIR@FPIR 0.1 |", "|---|---|---|---|---|---|---|---|"]
    for cond, closed in m["closed_set"].items():
        v = m["verification"].get(cond, {})
        o = m["open_set"].get(cond, {})
        tar = v.get("TAR@FAR") or {}
        fnir = o.get("FNIR@FPIR") or {}
        lines.append(f"| {cond} | {_pct(closed.get('rank1'))} | {_frac(tar.get('0.1'))} | {_frac(tar.get('0.01'))} | "
                     f"{_frac(tar.get('0.001'))} | {_frac(v.get('EER'))} | {_frac(fnir.get('0.01'))} | "
                     f"{_frac(fnir.get('0.1'))} |")
    lines.append("(TAR, EER and FNIR in percent; rank-1 as OpenGait reports it: identical views excluded where the "
                 "protocol does)")
    return "\n".join(lines)


def lr_line(lr: dict) -> str:
    """The console line of an evaluation's LR-model validation (metrics.json ``lr_validation``)."""
    def num(key: str) -> str:
        return "—" if lr.get(key) is None else f"{lr[key]:.4f}"
    return (f"LR model: Cllr {num('cllr')} (Cllr_min {num('cllr_min')}, Cllr_cal {num('cllr_cal')}), EER "
            f"{num('eer')}, {'held out' if lr.get('held_out') else 'not held out'}"
            + (f" ({lr['note']})" if lr.get("note") else "") + f"; {lr.get('file')}")


@reports_user_errors
def evaluate_command(argv: list[str]) -> int:
    args = evaluate_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    t0 = time.perf_counter()
    try:
        out, metrics = run_evaluation(args)
    except KeyboardInterrupt as exc:
        from allinone.errors import interrupted_exit, interrupted_line
        print(interrupted_line(exc, "embeddings computed so far are cached; run the same command to resume"),
              file=sys.stderr)
        return interrupted_exit(exc)
    print(metrics["table"])
    lr = metrics.get("lr_validation")
    if lr:  # what --lr-model asked for, beside the file it is written to
        print(lr_line(lr))
    log.info("evaluated in %.1f s", time.perf_counter() - t0)
    print(out)
    return 0


# ------------------------------------------------------------------------------------------------ calibrate

def calibrate_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python main.py calibrate",
                                description="Pick the threshold for a target false-positive identification rate "
                                            "from an evaluation (or a dataset, evaluated first) and write a "
                                            "calibration file for runs with this checkpoint.")
    p.add_argument("--evaluation", type=Path, default=None, metavar="DIR", help="an evaluate output folder")
    p.add_argument("--target-fpir", type=float, default=0.01, metavar="X", help="target FPIR (default 0.01)")
    p.add_argument("--condition", default=None, metavar="NAME",
                   help="calibrate on one probe condition (default: all conditions pooled)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="calibration file (default: <checkpoint stem>.calibration.json beside the checkpoint)")
    p.add_argument("--seg-model", default=None, metavar="PATH",
                   help="the segmentation model that made the dataset's silhouettes (extract --seg-model): recorded, "
                        "so that runs with another segmenter refuse the file (without it: not known, not checked)")
    p.add_argument("--pose-model", default=None, metavar="PATH",
                   help="likewise the pose model that made the dataset's keypoints, for a gait model that reads them")
    _dataset_args(p, required=False)
    return p


def calibrate(evaluation: Path, target: float, condition: str | None, out: Path | None,
              inputs=None) -> tuple[Path, dict]:
    """Write the calibration file of an evaluation; ``inputs`` (InputModels): the models that made the dataset's
    silhouettes and keypoints, where the user named them."""
    from allinone.decide.calibration import beside, impostor_source, write_calibration
    from allinone.decide.fpir import Evidence
    from allinone.evaluate.openset import fpir_fnir

    mfile = evaluation / "metrics.json"
    if not mfile.is_file():
        raise UserError("no metrics.json here: not an evaluate output folder", evaluation)
    m = read_json(mfile, "metrics.json")
    if not isinstance(m, dict) or not isinstance(m.get("open_set"), dict) or not isinstance(m.get("model"), dict) \
            or not all(isinstance(m["model"].get(k), str) for k in ("path", "sha256", "arch", "metric")):
        raise UserError("metrics.json: not one written by python main.py evaluate (no open_set or model)", mfile)
    try:
        s = np.load(evaluation / "searches.npz", allow_pickle=False)
        s = {k: s[k] for k in s.files}
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"searches.npz missing or unreadable ({str(exc).splitlines()[0]})", evaluation) from None
    missing = [f"{c}.{k}" for c in m["open_set"] for k in ("nonmated_nearest", "mated_nearest", "mated_correct")
               if f"{c}.{k}" not in s]
    if missing:
        raise UserError(f"searches.npz lacks {missing[0]} (not this evaluation's file)", evaluation)
    if not (evaluation / "impostors.npz").is_file():
        raise UserError("no impostors.npz here (an evaluation from an older version): evaluate again", evaluation)
    imp = np.load(evaluation / "impostors.npz")
    conds = list(m["open_set"])
    if condition is not None:
        if condition not in conds:
            raise UserError(f"no condition {condition!r} in this evaluation (it has {', '.join(conds)})", evaluation)
        conds = [condition]
    non = np.concatenate([s[f"{c}.nonmated_nearest"] for c in conds])
    mated = np.concatenate([s[f"{c}.mated_nearest"] for c in conds])
    correct = np.concatenate([s[f"{c}.mated_correct"] for c in conds]).astype(bool)
    key = condition or "all"
    if not len(non) or not len(mated) or f"{key}.count" not in imp or not int(imp[f"{key}.count"]):
        raise UserError("this evaluation has no mated and non-mated searches to calibrate on", evaluation)
    if f"{key}.unit" not in imp:
        raise UserError("impostors.npz counts independent pairs by sequences (an evaluation from an older version): "
                        "evaluate again", evaluation)
    impostor = {"count": int(imp[f"{key}.count"]), "independent": int(imp[f"{key}.independent"]),
                "independent_unit": str(imp[f"{key}.unit"]),
                "lowest": [float(x) for x in imp[f"{key}.lowest"]],
                "quantiles": {"p": [float(x) for x in imp[f"{key}.p"]], "d": [float(x) for x in imp[f"{key}.d"]]},
                "independence": "disjoint pairs of people (a greedy matching of probe people to gallery people)"}
    # the evaluation's own gallery size: its searches compare each probe with every gallery sequence
    sizes = m.get("gallery_sequences") or {}
    n_gallery = sizes.get(key) or max([v for c, v in sizes.items() if c in conds] or [0]) or None
    record = {"checkpoint": m["model"]["path"], "checkpoint_sha256": m["model"]["sha256"],
              "arch": m["model"]["arch"], "metric": m["model"]["metric"],
              "embedding": m["model"].get("embedding", "embed_1"), "target_fpir": target,
              "dataset": m["dataset"]["root"], "protocol": m["protocol"], "condition": key,
              "frames_limit": m["frames_limit"], "searches": {"mated": int(len(mated)), "non_mated": int(len(non))},
              "evaluation": str(evaluation), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "impostor": impostor, **({"inputs": inputs.to_json()} if inputs else {})}
    ev = Evidence([impostor_source(record, mfile)])
    if n_gallery:  # the threshold for the target at the evaluation's own gallery size, and what it achieves there
        est, ok = ev.choose(target, n_gallery)
        fpir, fnir = fpir_fnir(non, mated, correct, est.threshold)
        record.update({"gallery_size": n_gallery, "threshold": est.threshold, "supported": ok,
                       "estimated_fpir": {"estimate": est.fpir, "ci95": [est.low, est.high]},
                       "achieved_fpir": fpir, "fnir": fnir})
    path = out or beside(m["model"]["path"])
    return write_calibration(path, record), record


def _named_inputs(args):
    """The input models calibrate was told made the dataset (InputModels), or None when it was told none."""
    from allinone.io.input_models import InputModel, InputModels
    if not args.seg_model and not args.pose_model:
        return None
    for flag, path in (("--seg-model", args.seg_model), ("--pose-model", args.pose_model)):
        if path and not Path(path).exists():
            raise UserError(f"{flag}: no such model", path)
    from allinone.io.run_folder import sha256_path
    return InputModels(*(InputModel(str(x), sha256_path(x)) if x else InputModel()
                         for x in (args.seg_model, args.pose_model)))


@reports_user_errors
def calibrate_command(argv: list[str]) -> int:
    if "--lr" in argv:  # a likelihood-ratio model: its own parser and module
        from allinone.commands.calibrate_lr import calibrate_lr_command
        return calibrate_lr_command(argv)
    p = calibrate_parser()
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    if not 0 < args.target_fpir < 1:
        print_error(f"--target-fpir must be between 0 and 1, got {args.target_fpir}")
        return 2
    direct = [args.dataset, args.partition, args.protocol, args.gait_model]
    if args.evaluation is None:
        if not all(x is not None for x in direct):
            raise UserError("give --evaluation DIR, or --dataset, --partition, --protocol and --gait-model")
        evaluation, metrics = run_evaluation(args)
        print(metrics["table"])
    else:
        evaluation = args.evaluation
    path, rec = calibrate(evaluation, args.target_fpir, args.condition, args.out, _named_inputs(args))
    imp = rec["impostor"]
    print(f"{imp['count']} impostor pairs ({imp['independent']} independent: disjoint pairs of people), "
          f"{rec['metric']}, {rec['embedding']}")
    if "threshold" in rec:
        est = rec["estimated_fpir"]
        print(f"for this evaluation's gallery of {rec['gallery_size']}: threshold {rec['threshold']:.6g} for FPIR "
              f"{rec['target_fpir']}: estimated FPIR {est['estimate']:.4g} (95% CI {est['ci95'][0]:.4g}-"
              f"{est['ci95'][1]:.4g}){'' if rec['supported'] else ', the evidence cannot show the target'}; "
              f"achieved FPIR {rec['achieved_fpir']:.4f}, FNIR {rec['fnir']:.4f} over "
              f"{rec['searches']['non_mated']} non-mated and {rec['searches']['mated']} mated searches")
    print(path)
    return 0
