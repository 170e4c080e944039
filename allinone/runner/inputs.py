"""A run's inputs, checked before any model loads: names, output file names, repeated files, the sources opened."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from allinone.config import RunConfig
from allinone.decide.calibration import load_calibration, read_calibration
from allinone.decide.threshold import check_threshold
from allinone.errors import UserError
from allinone.io.run_folder import check_name_lengths, sha256_path
from allinone.io.video import StreamSource, VideoSource, is_stream, open_stream, stream_name
from allinone.sinks.outputs import check_outputs
from allinone.stages.build import check_models_given

log = logging.getLogger(__name__)


@dataclass
class Input:
    """One input of a run: where from, its role, its name in the run folder, and its opened source."""

    path: object  # a Path, or a stream's address
    role: str  # "gallery" or "probe"
    name: str
    source: VideoSource | StreamSource | None  # None: a camera that did not answer yet (LiveConfig.retry_unanswered)

    @property
    def live(self) -> bool:
        return is_stream(self.path)


@dataclass
class RunInputs:
    inputs: list[Input]
    gallery_name: str  # the gallery video's name, or the gallery file's stem

    @property
    def files(self) -> list[Input]:
        return [i for i in self.inputs if not i.live]

    @property
    def streams(self) -> list[Input]:
        return [i for i in self.inputs if i.live]


def unique_names(paths: list[Path]) -> list[str]:
    """File stems, suffixed -2, -3, … where two inputs share one."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = p.stem or "video"
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        names.append(stem if n == 1 else f"{stem}-{n}")
    # a suffixed name could collide with a real stem ("a-2"): resolve by suffixing again
    out: list[str] = []
    for name in names:
        while name in out:
            name = f"{name}-x"
        out.append(name)
    return out


def _output_names(inputs: list[tuple], names: list[str], gallery_name: str, config: RunConfig) -> list[tuple]:
    """(the longest file names a run writes for each input, the input): its tracks file and tracked video, a
    probe's result video; a stream's carry a segment number."""
    out = []
    for (path, role), name in zip(inputs, names):
        seg = "-000" if is_stream(path) else ""
        out += [(f"{name}{seg}.mp4", str(path))]
        if role == "probe" and not config.track_only:
            out.append((f"G-{gallery_name}_P-{name}{seg}.mp4", str(path)))
    return out


def _check_calibration_early(path: Path, checkpoint: str | None) -> None:
    """A calibration file that cannot serve this run is refused before any model loads: missing, not one, damaged,
    or made for another checkpoint file (its metric and embedding are known only once the model is loaded)."""
    rec = read_calibration(path)
    if checkpoint and Path(checkpoint).is_file():  # the same comparison find_calibration makes after the load
        load_calibration(path, sha256_path(checkpoint), rec["metric"])


def _warn_repeated_inputs(paths: list[Path]) -> None:
    """One warning per file given more than once (as gallery and probe, or twice as probe)."""
    seen: dict[Path, int] = {}
    for p in paths:
        try:
            key = p.resolve()
        except OSError:
            key = p
        seen[key] = seen.get(key, 0) + 1
    for p, n in seen.items():
        if n > 1:
            log.warning("%s is given %d times (as gallery and probe, or repeated): its people will match "
                        "themselves", p, n)


def _check_streams(config: RunConfig, inputs: list[tuple]) -> None:
    if not any(is_stream(p) for p, _ in inputs):
        return
    if not all(is_stream(p) for p in config.probes):
        raise UserError("live streams are a run's only --probe inputs, not mixed with video files (one --probe "
                        "stream or several, with a gallery video or --gallery-db)")
    if config.track_only:
        raise UserError("--track-only is for video files, not live streams")
    if config.gait.model:
        from allinone.gait.backends import reads_keypoints, reads_silhouettes
        if reads_keypoints(config.gait.model) and reads_silhouettes(config.gait.model):
            raise UserError("a SkeletonGait++ checkpoint runs on video files only, not yet on live streams",
                            config.gait.model)


def _open_stream(spec: str, config: RunConfig) -> StreamSource | None:
    """The stream opened; one that does not answer is a user error, or None where the run retries it later."""
    try:
        return open_stream(spec, config.live.reconnect_s)
    except UserError as exc:
        if not config.live.retry_unanswered:
            raise
        log.warning("%s; retrying while the other cameras run", exc)
        return None


def check_inputs(config: RunConfig, open_streams: bool = True) -> RunInputs:
    """Every cheap check of a run, in the order a user's mistake is most likely found; every input opened (a stream
    connected) before any model is loaded. ``open_streams`` False: the streams are left for the machines that read
    them (``watch --engine ray``: a node's actor; a camera may allow one client only)."""
    if (config.gallery is None) == (config.gallery_db is None):
        raise UserError("give a gallery video or a gallery file (--gallery or --gallery-db), one of them")
    given = ([(config.gallery, "gallery")] if config.gallery is not None else []) + \
        [(p, "probe") for p in config.probes]
    _check_streams(config, given)
    names = unique_names([Path(stream_name(str(p))) if is_stream(p) else Path(p) for p, _ in given])
    if config.camera_names:  # named by the caller (watch): one name per live probe, in order
        if len(config.camera_names) != len(config.probes):
            raise ValueError("one camera name per live probe")
        names = names[:len(names) - len(config.probes)] + list(config.camera_names)
    gallery_name = names[0] if config.gallery is not None else Path(config.gallery_db).stem
    check_name_lengths(config.output, _output_names(given, names, gallery_name, config))
    sources = [(_open_stream(str(p), config) if open_streams else None) if is_stream(p) else VideoSource(p)
               for p, _ in given]
    _warn_repeated_inputs([Path(p) for p, _ in given if not is_stream(p)])
    if config.match.threshold is not None and config.match.metric != "auto":
        check_threshold(config.match.threshold, config.match.metric)
    if config.match.calibration and not config.track_only:  # its form and checkpoint, before any model loads
        _check_calibration_early(Path(config.match.calibration), config.gait.model)
    check_models_given(config)
    check_outputs(config.outputs)
    return RunInputs([Input(p, role, name, src) for (p, role), name, src in zip(given, names, sources)],
                     gallery_name)


__all__ = ["Input", "RunInputs", "check_inputs", "unique_names"]
