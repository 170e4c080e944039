"""python main.py compare QUESTIONED REFERENCE --lr-model FILE: one person from each video, their gait distance, its
likelihood ratio with the ENFSI verbal equivalent, and a report an examiner can file (compare_report.html, and .pdf
through headless Chromium).

The videos go through the main command's own pipeline (commands/run.py ``run``: the questioned video as gallery,
the reference as probe) into ``pipeline/`` inside the comparison folder; the person of each video is its longest
usable track (most silhouettes), or ``--track`` / ``--ref-track``. compare.json records the case: both persons, the
distance, the LR, the model files and sha256 of every input.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from allinone.commands.args import Parser
from allinone.errors import UserError, reports_user_errors

log = logging.getLogger(__name__)

MANIFEST = "compare.json"
REPORT = "compare_report.html"
PDF = "compare_report.pdf"


def compare_parser() -> argparse.ArgumentParser:
    from allinone.commands.args import add_model_args, positive_int
    p = Parser(prog="python main.py compare",
                                description="Compare the walker of a questioned video with the walker of a reference "
                                            "video: gait distance, likelihood ratio from a calibrated LR model "
                                            "(calibrate --lr) and its verbal equivalent, and a report.")
    p.add_argument("questioned", type=Path, metavar="QUESTIONED", help="the questioned video (unknown walker)")
    p.add_argument("reference", type=Path, metavar="REFERENCE", help="the reference video (known walker)")
    p.add_argument("--lr-model", type=Path, required=True, metavar="FILE", help="an LR model from calibrate --lr")
    p.add_argument("--track", type=positive_int, default=None, metavar="N",
                   help="the questioned video's track to compare (default: its longest usable one)")
    p.add_argument("--ref-track", type=positive_int, default=None, metavar="N",
                   help="the reference video's track (default: its longest usable one)")
    p.add_argument("--no-pdf", action="store_true", help="write the HTML report only")
    p.add_argument("--output", type=Path, default=Path("output"), metavar="DIR")
    p.add_argument("--name", default=None, metavar="NAME")
    add_model_args(p)
    return p


def pick_track(video, wanted: int | None, min_frames: int, flag: str) -> int:
    """The track to compare: ``wanted`` (refused by name if missing or too short), else the one with the most
    silhouettes among those with at least ``min_frames``."""
    emb = video.embeddings
    usable = {t: e for t, e in emb.items() if e.n_frames >= min_frames}
    listing = ", ".join(f"{t} ({e.n_frames} silhouettes)" for t, e in sorted(emb.items())) or "none"
    if wanted is not None:
        if wanted not in usable:
            raise UserError(f"{flag} {wanted}: no such track with {min_frames} usable silhouettes (tracks: {listing})",
                            video.info.path)
        return wanted
    if not usable:
        raise UserError(f"no walking person with {min_frames} usable silhouettes was found (tracks: {listing})",
                        video.info.path)
    if len(usable) > 1:
        log.warning("%s: %d usable tracks; comparing the longest (give %s to choose)", video.info.path, len(usable),
                    flag)
    return max(sorted(usable), key=lambda t: usable[t].n_frames)


def _person(video, tid: int, sha: str) -> dict:
    tr, e = video.tracks[tid], video.embeddings[tid]
    fps = video.info.fps or 30.0
    return {"video": str(video.info.path), "video_sha256": sha, "name": video.info.name, "track": tid,
            "first_frame": tr.first_frame + 1, "last_frame": tr.last_frame + 1,
            "seconds": [round(tr.first_frame / fps, 2), round((tr.last_frame + 1) / fps, 2)],
            "n_silhouettes": e.n_frames, "tracks_in_video": sorted(video.tracks),
            "frames": video.info.frames, "fps": video.info.fps, "rotation": video.info.rotation,
            "crop": tr.files.get("crop") and f"pipeline/{tr.files['crop']}",
            "gei": tr.files.get("gei") and f"pipeline/{tr.files['gei']}"}


def print_pdf(html_path: Path, pdf_path: Path, timeout: float = 120.0) -> str | None:
    """The report as PDF through headless Chromium; None (with a warning) when there is no Chromium or it fails."""
    import shutil
    import subprocess
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        log.warning("no chromium found: the PDF report is not written (apt-get install chromium)")
        return None
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
           f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("chromium could not print the PDF report (%s)", exc)
        return None
    return pdf_path.name if pdf_path.is_file() and pdf_path.stat().st_size > 0 else None


def _record(args, model, manifest: dict, gait_sha: str, questioned: tuple, reference: tuple, shas: dict, d: float,
            lr: float, raw: float, inside: bool | None, tippett: bool) -> dict:
    """compare.json: the comparison, the LR and its model, its validation, the models and settings."""
    from allinone import __version__
    from allinone.decide.lr_model import checkpoint_validation, verbal
    from allinone.io.run_folder import sha256_path
    span = model.record.get("data", {}).get("distance_range")
    weights = manifest["weights"]
    validation = checkpoint_validation(model.record, gait_sha)
    rec = {
        "version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "allinone_version": __version__,
        "questioned": _person(*questioned, shas["questioned"]),
        "reference": _person(*reference, shas["reference"]),
        "metric": model.metric, "distance": round(d, 6), "lr": lr, "log10_lr": round(math.log10(lr), 4),
        "lr_unbounded": raw if math.isfinite(raw) else None, "lr_at_bound": raw != lr,
        "distance_in_calibration_range": inside, "calibration_distance_range": span,
        "lr_verbal": verbal(lr), "verbal_scale": "ENFSI Guideline for Evaluative Reporting in Forensic Science "
                                                 "(2015)",
        "propositions": model.record.get("propositions"),
        "lr_model": {"file": str(args.lr_model), "sha256": sha256_path(args.lr_model),
                     "method": model.fit.method, "bounds": model.record["fit"]["bounds"],
                     "fitted_on": model.record.get("data"), "validation": {
                         k: model.record.get("validation", {}).get(k)
                         for k in ("cllr", "cllr_min", "cllr_cal", "eer", "misleading", "cross_validation")}},
        "checkpoint_validated": validation["validated"], "checkpoint_validation": validation,
        "models": {**weights, "gait": {**weights.get("gait", {})}},
        "settings": manifest["settings"], "device": manifest["device"],
        "platform": manifest["platform"],
        "pipeline": {"run": "pipeline/run.json", "report": "pipeline/report.html"},
        "files": {"report": REPORT, "tippett": "tippett_case.png" if tippett else None},
    }
    return rec


def compare(args: argparse.Namespace) -> tuple[Path, dict]:
    from allinone.commands.args import spec_from_args
    from allinone.runner.runner import run
    from allinone.decide.lr_model import read_lr_model
    from allinone.decide.distance import distance_matrix
    from allinone.evaluate.validation import tippett_plot
    from allinone.io.run_folder import RunWriter, sha256_path
    from allinone.io.video import VideoSource
    from allinone.results.compare_report import render_compare_report
    from allinone.stages.build import check_models_given, resolve_models

    # cheap checks first: the videos open, the LR model reads, the gait checkpoint is the model's
    for v in (args.questioned, args.reference):
        VideoSource(v)  # refused by name when missing or not a video
    model = read_lr_model(args.lr_model)
    config = spec_from_args(args, gallery=args.questioned, probes=(args.reference,), output=args.output,
                            name=args.name)
    gait = config.gait
    if not gait.model and model.record.get("checkpoint") and Path(model.record["checkpoint"]).is_file():
        gait = replace(gait, model=str(model.record["checkpoint"]))  # the checkpoint the LR model was made with
    # every pair is scored by the LR model: no threshold, no calibration, the model's metric
    config = replace(config, gait=gait, match=replace(config.match, threshold=None, calibration="",
                                                      metric=model.metric))
    check_models_given(config)
    config = resolve_models(config)
    gait_sha = sha256_path(config.gait.model)
    model.check_for(gait_sha, model.metric)

    def models_ready(stages) -> None:  # the embedding is known once the checkpoint is loaded, before any video
        model.check_for(gait_sha, model.metric, getattr(stages.embedder, "embedding", "embed_1"))
    shas = {"questioned": sha256_path(args.questioned), "reference": sha256_path(args.reference)}
    default = f"compare-{args.questioned.stem}-{args.reference.stem}"
    with RunWriter(args.output, args.name, default=default) as writer:
        result = run(replace(config, output=writer.dir, name="pipeline"), models_ready=models_ready)
        q_video, r_video = result.videos
        qt = pick_track(q_video, args.track, config.match.min_frames, "--track")
        rt = pick_track(r_video, args.ref_track, config.match.min_frames, "--ref-track")
        qe, re_ = q_video.embeddings[qt], r_video.embeddings[rt]
        d = float(distance_matrix(qe.feature[None], re_.feature[None], model.metric)[0, 0])
        lr = model.lr(d)
        raw = float(model.fit.raw_lr(np.array([d]))[0])
        span = model.record.get("data", {}).get("distance_range")
        inside = None if not span else bool(span[0] <= d <= span[1])
        if inside is False:
            log.warning("distance %.4g is outside the calibration data's range %.4g..%.4g: the LR is extrapolated "
                        "(and held at its bounds)", d, span[0], span[1])
        curves = model.record.get("validation", {}).get("tippett")
        if curves:
            tippett_plot(curves, writer.path("tippett_case.png"), math.log10(lr),
                         title=f"validation data ({model.record['data']['name']}, held out) and this comparison")
        rec = _record(args, model, result.manifest, gait_sha, (q_video, qt), (r_video, rt), shas, d, lr, raw,
                      inside, bool(curves))
        rec["models"]["lr_model"] = {"path": str(args.lr_model), "sha256": rec["lr_model"]["sha256"]}
        html_text = render_compare_report(writer.dir, rec)
        writer.path(REPORT).write_text(html_text, encoding="utf-8")
        rec["files"]["pdf"] = None if args.no_pdf else print_pdf(writer.dir / REPORT, writer.dir / PDF)
        out = writer.finalize_json(MANIFEST, rec)
    return out, rec


@reports_user_errors
def compare_command(argv: list[str]) -> int:
    args = compare_parser().parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        out, rec = compare(args)
    except KeyboardInterrupt as exc:
        from allinone.errors import interrupted_exit, interrupted_line
        print(interrupted_line(exc, "no comparison folder was written"), file=sys.stderr)
        return interrupted_exit(exc)
    q, r = rec["questioned"], rec["reference"]
    print(f"questioned {q['name']} track {q['track']} (frames {q['first_frame']}-{q['last_frame']}) vs reference "
          f"{r['name']} track {r['track']} (frames {r['first_frame']}-{r['last_frame']}): distance "
          f"{rec['distance']:.4g} ({rec['metric']}), LR {rec['lr']:.3g} (log10 {rec['log10_lr']:.2f}): "
          f"{rec['lr_verbal']}")
    if not rec["checkpoint_validated"]:
        print(f"warning: gait checkpoint sha256 {rec['models']['gait'].get('sha256')} has no validation on record "
              f"({rec['checkpoint_validation']['reason']}): these numbers are not evidence", file=sys.stderr)
    print(out / REPORT)
    return 0


__all__ = ["compare", "compare_command", "compare_parser", "pick_track", "print_pdf"]
