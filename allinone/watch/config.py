"""The watch service's config file (python main.py watch CONFIG.yaml) as typed, frozen settings.

Every key is documented in KEYS and CAMERA_KEYS (key → one line with its trade-off). Those two dicts are also the
keys the loader accepts, so the generated docs and the parser cannot drift apart. Loading checks only what is
cheap — the YAML, each value's type and range, that the files named exist and the URLs parse — and loads no model:
a bad config is one line naming the key path (``cameras[1].frame_step: must be an integer ≥ 1, got 'x'``), a
UserError (exit 2), before any model loads.

Relative paths in the file are taken from the file's own folder, so a service started from any working folder
(systemd, a container) reads the same files. The settings the service shares with a run (threshold, target FPIR,
calibration, MQTT, webhooks) are kept as MatchConfig and OutputsConfig, whose defaults live once, in
allinone/config.py.

Over 400 lines: every key's documentation and every value's check, each one line naming its key, belong together.
"""
from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from allinone.config import MatchConfig, OutputsConfig
from allinone.errors import UserError, first_line

# A camera's name becomes part of file names, MQTT topics and URLs: ASCII letters, digits, "_", "." and "-" (the
# characters io.video.stream_name keeps), first a letter or digit (a leading "." hides a file, a leading "-" reads
# as an option), at most 64 (far below any file system's name limit, with the suffixes added to it).
CAMERA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CAMERA_NAME_RULE = "1 to 64 ASCII letters, digits, _ . -, starting with a letter or digit"
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
WEBCAM = re.compile(r"(?:webcam:|/dev/video)?(\d+)")  # 0, "0", "webcam:0", "/dev/video0": OpenCV's device 0
TOKEN = re.compile(r"[\x21-\x7e]{16,}")  # it travels in an HTTP header: printable ASCII, no spaces
SIGHTINGS_FILE = "sightings.db"


class _Bad(ValueError):
    """One bad value: where it is (a key path below the object being built) and why."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}")
        self.key, self.why = key, why

    def under(self, prefix: str) -> "_Bad":
        return _Bad(prefix + ("" if self.key.startswith("[") else ".") + self.key, self.why)


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML (tuples shown as the lists they were)."""
    def lists(v):
        return [lists(x) for x in v] if isinstance(v, (list, tuple)) else v
    return repr(lists(value))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_polygon(poly: Any, key: str) -> None:
    points = poly if isinstance(poly, tuple) else ()
    if len(points) < 3 or not all(isinstance(p, tuple) and len(p) == 2 and all(_is_number(c) and c >= 0 for c in p)
                                  for p in points):
        hint = " (a box is its 4 corners: [[x1, y1], [x2, y1], [x2, y2], [x1, y2]])" \
            if isinstance(poly, tuple) and len(poly) == 4 and all(_is_number(c) for c in poly) else ""
        raise _Bad(key, f"a polygon is a list of at least 3 [x, y] points in pixels (≥ 0), got {_show(poly)}{hint}")


def _inside(poly: tuple[tuple[float, float], ...], x: float, y: float) -> bool:
    """Even-odd rule: a ray from (x, y) to the right crosses the polygon's edges an odd number of times."""
    inside = False
    for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


@dataclass(frozen=True)
class CameraConfig:
    """One camera (CAMERA_KEYS says what each setting does)."""

    name: str
    # a stream URL (rtsp, rtsps, http, https), "webcam:N" (a local camera), or a video file's absolute path (looped)
    source: str
    rotate: int = 0
    frame_step: int = 1
    # polygons of (x, y) pixel points; a detection whose box's bottom centre (the feet) lies inside one is ignored
    ignore: tuple[tuple[tuple[float, float], ...], ...] = ()

    def __post_init__(self) -> None:
        from allinone.io.video import ROTATIONS
        if not isinstance(self.name, str) or not CAMERA_NAME.fullmatch(self.name):
            raise _Bad("name", f"must be {CAMERA_NAME_RULE}, got {_show(self.name)}")
        if not isinstance(self.source, str) or not self.source:
            raise _Bad("source", f"must be a URL, a webcam number or a video file, got {_show(self.source)}")
        if type(self.rotate) is not int or self.rotate not in ROTATIONS:
            raise _Bad("rotate", f"must be 0, 90, 180 or 270 (degrees clockwise), got {_show(self.rotate)}")
        if type(self.frame_step) is not int or self.frame_step < 1:
            raise _Bad("frame_step", f"must be an integer ≥ 1, got {_show(self.frame_step)}")
        if not isinstance(self.ignore, tuple):
            raise _Bad("ignore", f"must be a list of polygons, got {_show(self.ignore)}")
        for i, poly in enumerate(self.ignore):
            _check_polygon(poly, f"ignore[{i}]")

    @property
    def kind(self) -> str:
        """"stream" (a URL), "webcam" or "file"."""
        if self.source.startswith("webcam:"):
            return "webcam"
        return "stream" if "://" in self.source else "file"

    @property
    def spec(self) -> str:
        """What the runner opens: the source, a video file as loop:PATH (played as a live camera, looped)."""
        from allinone.io.video import LOOP
        return LOOP + self.source if self.kind == "file" else self.source

    def ignores(self, x: float, y: float) -> bool:
        """Whether the point (x, y) of the (rotated) frame lies in a region to ignore."""
        return any(_inside(poly, x, y) for poly in self.ignore)


def listen_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValueError saying what is wrong. The host is an IP address
    or localhost (a name would make where the page is reachable depend on DNS)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"must be HOST:PORT such as 127.0.0.1:8090, got {_show(text)}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"the host must be an IP address or localhost, got {host!r}") from None
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"the port must be 1 to 65535, got {port}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@dataclass(frozen=True)
class WatchConfig:
    """The whole service (KEYS says what each setting does). ``match`` holds threshold, target_fpir and
    calibration; ``outputs`` mqtt and webhooks."""

    gallery: Path
    output: Path
    cameras: tuple[CameraConfig, ...]
    match: MatchConfig = field(default_factory=MatchConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    overlaps: tuple[tuple[str, str], ...] = ()
    retention_days: float = 30.0
    listen: str = "127.0.0.1:8090"
    token: str = field(default="", repr=False)  # a secret: never in a log line

    def __post_init__(self) -> None:
        if not isinstance(self.cameras, tuple) or not self.cameras \
                or not all(isinstance(c, CameraConfig) for c in self.cameras):
            raise _Bad("cameras", "must be a list of at least one camera")
        seen: dict[str, int] = {}
        for i, cam in enumerate(self.cameras):
            j = seen.setdefault(cam.name.lower(), i)  # case-blind: Hall and hall are one file on macOS
            if j != i:
                raise _Bad(f"cameras[{i}].name", f"{cam.name!r} is taken by cameras[{j}] (names are unique, "
                                                 "whatever their case)")
        names = [c.name for c in self.cameras]
        for i, pair in enumerate(self.overlaps):
            if not isinstance(pair, tuple) or len(pair) != 2 or pair[0] == pair[1]:
                raise _Bad(f"overlaps[{i}]", f"must be a pair of two camera names [a, b], got {_show(pair)}")
            for name in pair:
                if name not in names:
                    raise _Bad(f"overlaps[{i}]", f"{_show(name)} is not one of the cameras ({', '.join(names)})")
        if not _is_number(self.retention_days) or self.retention_days < 0:
            raise _Bad("retention_days", f"must be a number of days ≥ 0 (0 keeps everything), got "
                                         f"{_show(self.retention_days)}")
        self._check_listen()

    def _check_listen(self) -> None:
        try:
            host, _ = listen_address(self.listen)
        except ValueError as exc:
            raise _Bad("listen", str(exc)) from None
        if not isinstance(self.token, str) or (self.token and not TOKEN.fullmatch(self.token)):
            raise _Bad("token", "must be at least 16 printable ASCII characters without spaces (e.g. python -c "
                                "'import secrets; print(secrets.token_urlsafe())')")
        if not self.token and not is_loopback(host):
            raise _Bad("token", f"is required to listen on {self.listen} (not the loopback): anyone who reaches "
                                "that address could read sightings and change the gallery")

    @property
    def sightings_path(self) -> Path:
        return self.output / SIGHTINGS_FILE

    def camera(self, name: str) -> CameraConfig:
        return next(c for c in self.cameras if c.name == name)

    def may_see_together(self, a: str, b: str) -> bool:
        """Whether one person can be on cameras ``a`` and ``b`` at the same moment: only two cameras listed in
        ``overlaps``. Never one camera with itself: two tracks at once on one camera are two people."""
        return a != b and ((a, b) in self.overlaps or (b, a) in self.overlaps)


# key → one line: what it does and what it trades. The docs are generated from these, and they are the keys the
# loader accepts.
KEYS: dict[str, str] = {
    "gallery": "an enrolled gallery file (python main.py enroll): the people the service can name. Required.",
    "output": "folder of the sightings database (sightings.db), their pictures (media/) and each session's "
              "segments and events (sessions/). Required. The pictures grow with the sightings kept "
              "(retention_days bounds them); the sessions' segment videos are not deleted by retention.",
    "cameras": "the cameras: a list of {name, source, rotate, frame_step, ignore} (see the camera keys). "
               "Required. Each adds its decoding and its share of the models' time.",
    "threshold": "a distance, or auto (default): the distance for target_fpir from the impostor evidence. A fixed "
                 "one is stable but says nothing of its error rate; a lower one names fewer people, wrongly less "
                 "often.",
    "target_fpir": f"auto threshold: the false-positive identification rate to aim for over the gallery "
                   f"(default {MatchConfig.target_fpir}). Lower names fewer people, wrongly less often.",
    "calibration": "a calibration file (python main.py calibrate) whose impostor distances back the auto "
                   "threshold. Default: the one beside the gait checkpoint, if any.",
    "overlaps": "pairs [a, b] of cameras that can see one person at the same moment (default: none). A pair "
                "not listed lets the service rule out one person on both at once; listing too many loses that.",
    "mqtt": "mqtt://host[:port]/prefix: each decision event on PREFIX/events and PREFIX/<camera>/events. "
            "Default: none.",
    "webhooks": "URLs each decision event is POSTed to as JSON. Each is one more request per event.",
    "retention_days": f"sightings (rows, clips, crops, GEIs) older than this many days are deleted "
                      f"(default {WatchConfig.retention_days:g}; 0 keeps everything, and the disk fills).",
    "listen": f"HOST:PORT of the review page and API (default {WatchConfig.listen}, this machine only). Any "
              f"other address needs a token.",
    "token": "a secret every request must carry (required to listen beyond the loopback); at least 16 characters. "
             "Whoever reads this file has it: keep the file private.",
}
CAMERA_KEYS: dict[str, str] = {
    "name": f"the camera's name in sightings, events, topics and file names: {CAMERA_NAME_RULE}; unique.",
    "source": "rtsp://, rtsps://, http(s):// stream, a webcam: its number (0) or device (/dev/video0), or a video "
              "file, played at its own frame rate and looped without end (for trying the service: its wall times "
              "are the service's, not the recording's).",
    "rotate": "turn frames clockwise by 0 (default), 90, 180 or 270 degrees: for a camera mounted on its side "
              "(the models expect people upright). Costs one turn of each frame.",
    "frame_step": "analyse every n-th frame (default 1, every frame). 2 halves the models' work for this camera; "
                  "gait then sees half the steps of a walk (at 25 frames/s, 2 still gives ~12 per second; beyond 3 a walk's "
                  "cycle is too coarse for gait models trained on every frame). Skipped frames are not dropped ones.",
    "ignore": "regions to ignore, each a polygon [[x, y], [x, y], [x, y], ...] in pixels of the turned frame: a "
              "person whose feet (box bottom centre) are inside is not tracked. For screens, posters, mirrors; "
              "someone who walks through a region is lost there and may come back as a new track.",
}
REQUIRED = ("gallery", "output", "cameras")
CAMERA_REQUIRED = ("name", "source")


def _refuse_unknown(mapping: Mapping, keys: Mapping[str, str]) -> None:
    for key in mapping:
        if key not in keys:
            close = difflib.get_close_matches(str(key), list(keys), n=1)
            hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(keys)
            raise _Bad(str(key), f"unknown key ({hint})")


def _need(mapping: Mapping, required: tuple[str, ...], what: str) -> None:
    for key in required:
        if key not in mapping:
            raise _Bad(key, f"missing: {what} needs {', '.join(required)}")


def _value(key: str, conv: Callable[[Any, Path], Any], value: Any, base: Path) -> Any:
    """``conv(value, base)``, its ValueError made a _Bad at ``key``."""
    try:
        return conv(value, base)
    except _Bad as bad:
        raise bad.under(key) from None
    except ValueError as exc:
        raise _Bad(key, str(exc)) from None


def _path(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a path, got {_show(value)}")
    return Path(os.path.abspath(base / Path(value).expanduser()))


def _gallery(value: Any, base: Path) -> Path:
    from allinone.gallery.sqlite_file import inspect
    path = _path(value, base)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    try:  # its 100-byte header, read only: a video or another program's database named here by mistake
        if inspect(path) == "empty":
            raise ValueError(f"{path} is an empty file, not an enrolled gallery")
    except UserError as exc:
        raise ValueError(str(exc)) from None
    return path


def _output(value: Any, base: Path) -> Path:
    path = _path(value, base)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder")
    return path


def _file(value: Any, base: Path) -> str:
    path = _path(value, base)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return str(path)


def _threshold(value: Any, base: Path) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?[eE][+-]?\d+\s*", value):
        value = float(value)  # YAML 1.1 (PyYAML) reads 1.0e9 as text: only 1.0e+9 is a number there
    if not _is_number(value) or value < 0:
        raise ValueError(f"must be auto or a distance ≥ 0, got {_show(value)}")
    return float(value)


def _fpir(value: Any, base: Path) -> float:
    if not _is_number(value) or not 0 < value < 1:
        raise ValueError(f"must be a rate between 0 and 1 (exclusive), got {_show(value)}")
    return float(value)


def _sink_url(parse: Callable[[str], Any], flag: str) -> Callable[[Any, Path], str]:
    """A sink address checked by the sink's own parser (sinks/), its message naming the key, not the flag."""
    def conv(value: Any, base: Path) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a URL, got {_show(value)}")
        try:
            parse(value)
        except UserError as exc:
            raise ValueError(str(exc).removeprefix(f"{flag} ")) from None
        return value
    return conv


def _mqtt(value: Any, base: Path) -> str:
    from allinone.sinks.mqtt import parse_mqtt_url
    return _sink_url(parse_mqtt_url, "--mqtt")(value, base)


def _webhooks(value: Any, base: Path) -> tuple[str, ...]:
    from allinone.sinks.webhook import parse_webhook_url
    if not isinstance(value, list):
        raise ValueError(f"must be a list of URLs, got {_show(value)}")
    conv = _sink_url(parse_webhook_url, "--webhook")
    return tuple(_value(f"[{i}]", conv, url, base) for i, url in enumerate(value))


def _overlaps(value: Any, base: Path) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of camera pairs [[a, b], ...], got {_show(value)}")
    return tuple(tuple(p) if isinstance(p, list) else p for p in value)  # the pairs are checked by WatchConfig


def _source(value: Any, base: Path) -> str:
    from allinone.sinks.base import split_address
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return f"webcam:{value}"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a stream URL, a video file or a webcam number, got {_show(value)}")
    if "://" in value:
        def bad(why: str) -> ValueError:
            return ValueError(f"{value!r}: {why} (expected rtsp://, rtsps://, http:// or https://host[:port]/path)")
        split_address(value, STREAM_SCHEMES, bad)
        return value
    m = WEBCAM.fullmatch(value.strip())
    if m:
        return f"webcam:{int(m.group(1))}"
    return _file(value, base)


def _polygons(value: Any, base: Path) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of polygons [[[x, y], [x, y], [x, y]], ...], got {_show(value)}")
    def tuples(v):  # the shapes are checked by CameraConfig
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v
    return tuples(value)


_CAMERA = {"source": _source, "ignore": _polygons}


def _camera(value: Any, base: Path) -> CameraConfig:
    if not isinstance(value, dict):
        raise ValueError(f"a camera is a mapping such as {{name: hall, source: rtsp://...}}, got {_show(value)}")
    _refuse_unknown(value, CAMERA_KEYS)
    _need(value, CAMERA_REQUIRED, "a camera")
    return CameraConfig(**{k: _value(k, _CAMERA[k], v, base) if k in _CAMERA else v for k, v in value.items()})


def _cameras(value: Any, base: Path) -> tuple[CameraConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a list of at least one camera ({{name: ..., source: ...}}), got {_show(value)}")
    return tuple(_value(f"[{i}]", _camera, cam, base) for i, cam in enumerate(value))


_TOP = {"gallery": _gallery, "output": _output, "cameras": _cameras, "overlaps": _overlaps}
_MATCH = {"threshold": _threshold, "target_fpir": _fpir, "calibration": _file}  # MatchConfig's fields
_OUTPUTS = {"mqtt": _mqtt, "webhooks": _webhooks}  # OutputsConfig's fields
_AS_IS = ("retention_days", "listen", "token")  # checked by WatchConfig


def _build(raw: Mapping, base: Path) -> WatchConfig:
    _refuse_unknown(raw, KEYS)
    _need(raw, REQUIRED, "a watch config")

    def some(convs: Mapping[str, Callable]) -> dict:
        return {k: _value(k, conv, raw[k], base) for k, conv in convs.items() if k in raw}
    top = some(_TOP)  # the cameras (their sources) first: the most likely mistakes are there
    match, outputs = MatchConfig(**some(_MATCH)), OutputsConfig(**some(_OUTPUTS))
    return WatchConfig(match=match, outputs=outputs, **top, **{k: raw[k] for k in _AS_IS if k in raw})


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # an odd key (a list): the key checks refuse it by name
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError("watch config not found", path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the watch config ({exc})", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or first_line(exc)
        raise UserError(f"not valid YAML{where}: {what}", path) from None
    if data is None:
        raise UserError(f"the file is empty: a watch config needs {', '.join(REQUIRED)}", path)
    if not isinstance(data, dict):
        raise UserError(f"a watch config is a mapping of keys ({', '.join(REQUIRED)}, ...), got a "
                        f"{type(data).__name__}", path)
    return data


def load_watch_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> WatchConfig:
    """The config file at ``path`` checked and typed; ``overrides`` (top-level keys, e.g. the command line's
    listen and token) replace the file's before the checks, so they are checked by the same rules. A UserError
    naming the file and the key path for the first thing wrong."""
    path = Path(path)
    raw = {**_read_yaml(path), **(overrides or {})}
    try:
        return _build(raw, Path(os.path.abspath(path.parent)))
    except _Bad as bad:
        raise UserError(str(bad), path) from None


__all__ = ["CAMERA_KEYS", "CAMERA_NAME", "KEYS", "SIGHTINGS_FILE", "CameraConfig", "WatchConfig", "is_loopback",
           "listen_address", "load_watch_config"]
