"""The run folder from a run's records: result videos, run.json's videos and decisions, the report."""
from __future__ import annotations

from allinone.records import Decision, DecisionEvent
from allinone.results import manifest as mf
from allinone.results.render import Skeletons, render_video
from allinone.results.report import write_report
from allinone.sinks.base import Sinks
from allinone.stages.step import VideoResult


def file_events(results: list[VideoResult], decisions: list[Decision], sinks: Sinks) -> dict:
    """Each probe track's final decision as the event every output gets (span 1-based, the silhouettes its
    embedding used), stamped as it is made and sent to the sinks in the decisions' order; by (video, track)."""
    tracks = {(r.info.name, t): tr for r in results if r.info.role == "probe" for t, tr in r.tracks.items()}
    events = {}
    for d in decisions:
        tr = tracks[(d.probe_video, d.probe_track)]
        used = tr.embedding.n_frames if tr.embedding is not None else tr.n_silhouettes
        event = events[(d.probe_video, d.probe_track)] = DecisionEvent.of(
            d, (tr.first_frame + 1, tr.last_frame + 1), used, True)
        sinks.on_event(event)
    return events


def _rendered(runner, results: list[VideoResult], outcome) -> dict[str, dict[str, str]]:
    """Each input's files: a stream's segments, a file's result video drawn from its tracks file and decisions."""
    config, writer, decided = runner.config, runner.writer, outcome.decided
    outputs: dict[str, dict[str, str]] = {}
    for r in results:
        if r.info.name in outcome.live:
            outputs[r.info.name] = outcome.live[r.info.name]["outputs"]
            continue
        if not config.render:
            outputs[r.info.name] = {}
            continue
        identities, decisions = (decided.identities, decided.decisions) if decided else (None, None)
        poses = {t: tr.keypoints for t, tr in r.tracks.items() if tr.keypoints is not None}
        outputs[r.info.name] = {**r.outputs, **render_video(
            r.info, writer.dir / f"tracks/{r.info.name}.txt", writer, runner.plan.gallery_name, identities,
            decisions, config.quiet, r.timings, annotated=False, skeletons=Skeletons(poses) if poses else None)}
    return outputs


def _videos(runner, results: list[VideoResult], outputs: dict) -> list[dict]:
    segmented = runner.stages.segmenter is not None
    videos = [mf.video_entry(r.info, r.tracks, outputs[r.info.name], r.timings,
                             r.info.fps / r.silhouette_stride if segmented else None) for r in results]
    for entry, one in zip(videos, runner.plan.files):
        if one.source.decode_warning:  # a damaged or truncated file: the run says where decoding stopped
            entry["decode_warning"] = one.source.decode_warning
    return videos


def _pictures(runner, results: list[VideoResult], stored: dict) -> dict:
    """The gallery's pictures by (video, track): a gallery video's, and a gallery file's written into the folder.
    (The gallery's only: a probe video's name may be the one a gallery file's tracks carry.)"""
    pictures = {(r.info.name, t): {k: tr.files[k] for k in ("crop", "gei") if k in tr.files}
                for r in results if r.info.role == "gallery" for t, tr in r.tracks.items()}
    for tid, blobs in stored.items():
        for key, blob in zip(("crop", "gei"), blobs):
            if blob:
                rel = f"{mf.GALLERY_DB_PICTURES}/{tid:03d}_{key}.png"
                runner.writer.path(rel).write_bytes(blob)
                pictures.setdefault(("gallery", tid), {})[key] = rel
    return pictures


def _decisions(runner, results: list[VideoResult], outcome) -> dict:
    """run.json's identities, threshold and matches (and matches.csv), the assignment and distances of a file run;
    a gallery file's identities kept in the folder (rematch needs no file)."""
    d, writer, extra, stored = outcome.decided, runner.writer, {}, {}
    if runner.store is not None:
        from allinone.gallery.run_file import FEATURES, save_features
        save_features(writer.path(FEATURES), d.identities)
        extra["gallery_features"] = FEATURES
        stored = runner.store.pictures([m.track_id for i in d.identities for m in i.members[:1]])
    spans = {(r.info.name, t): (tr.first_frame + 1, tr.last_frame + 1) for r in results
             if r.info.role == "probe" for t, tr in r.tracks.items()}
    extra.update(mf.decisions_entries(d.identities, d.usable, d.threshold, d.decisions, writer, spans,
                                      _pictures(runner, results, stored), outcome.events))
    if not outcome.live:  # (a stream's decisions are many small ones, as it plays)
        matcher = runner.stages.matcher
        extra["assignment"] = mf.assignment_entry(runner.config.match.solve_seconds, matcher.solved)
        extra.update(mf.write_distances(writer, matcher.names, matcher.distances))
    extra["timings_s"] = {"match": round(outcome.match_s, 4)}
    return extra


def write(runner, created: str, results: list[VideoResult], outcome) -> dict:
    """Everything but run.json written; run.json's manifest returned (the report written from it)."""
    config = runner.config
    videos = _videos(runner, results, _rendered(runner, results, outcome))
    extra: dict = {"gallery_db": str(config.gallery_db), "search": outcome.search} \
        if config.gallery_db is not None else {}
    if outcome.live:
        extra["live"] = {name: x["stats"] for name, x in outcome.live.items()}
    if outcome.decided is not None:
        extra.update(_decisions(runner, results, outcome))
    if runner.sinks:  # delivered, dropped (queue full or unsent at the end) and failed events per sink
        extra["sinks"] = runner.sinks.close()
    manifest = mf.run_manifest(created, config, runner.device, runner.stages, videos, extra, runner.gait_sha)
    if outcome.decided is not None:
        manifest["report"] = write_report(runner.writer.dir, manifest)
    return manifest


__all__ = ["file_events", "write"]
