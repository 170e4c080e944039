"""The watch config file: the issue's smallest config parses with the run's defaults; every kind of mistake is one
line naming its key path, a UserError (exit 2), found before any model loads."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from allinone.config import MatchConfig, OutputsConfig
from allinone.errors import UserError, reports_user_errors
from allinone.watch import config as wc
from allinone.watch.config import CAMERA_KEYS, KEYS, CameraConfig, WatchConfig, load_watch_config

SMALLEST = """\
gallery: people.db          # an enrolled gallery file
output: output/watch        # the sightings database, segments, clips
cameras:
  - {name: hall, source: "rtsp://127.0.0.1:8554/hall"}
  - {name: corridor, source: "http://127.0.0.1:8080/corridor.ts"}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with an enrolled (empty) gallery, a video file, a calibration file and a plain file."""
    from allinone.gallery.store import GalleryStore
    GalleryStore(tmp_path / "people.db", create=True).close()
    (tmp_path / "walk.mp4").write_bytes(b"\0" * 16)
    (tmp_path / "cal.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not a gallery")
    return tmp_path


def _load(folder: Path, text: str, overrides: dict | None = None) -> WatchConfig:
    path = folder / "watch.yaml"
    path.write_text(textwrap.dedent(text))
    return load_watch_config(path, overrides)


def test_the_smallest_config_of_the_issue_parses_with_the_runs_defaults(folder):
    c = _load(folder, SMALLEST)
    assert c.gallery == folder / "people.db" and c.output == folder / "output" / "watch"
    assert [(cam.name, cam.kind, cam.rotate, cam.frame_step, cam.ignore) for cam in c.cameras] == [
        ("hall", "stream", 0, 1, ()), ("corridor", "stream", 0, 1, ())]
    assert c.match == MatchConfig() and c.outputs == OutputsConfig()  # defaults live once, in allinone/config.py
    assert c.overlaps == () and c.retention_days == WatchConfig.retention_days and c.token == ""
    assert wc.is_loopback(wc.listen_address(c.listen)[0])
    assert c.sightings_path == c.output / "sightings.db"
    assert not c.may_see_together("hall", "corridor")


def test_every_key_set(folder):
    c = _load(folder, """\
        gallery: people.db
        output: out
        cameras:
          - {name: hall, source: 0, rotate: 90, frame_step: 2,
             ignore: [[[0, 0], [100, 0], [100, 50], [0, 50]], [[200, 200], [300, 200], [250, 300.5]]]}
          - {name: desk, source: /dev/video1}
          - {name: demo, source: walk.mp4}
          - {name: door.2, source: "rtsps://user:pw@cam.local:322/stream"}
        threshold: 0.8
        target_fpir: 0.001
        calibration: cal.json
        overlaps: [[hall, desk]]
        mqtt: mqtt://127.0.0.1:1883/site
        webhooks: ["http://127.0.0.1:9000/hook", "https://example.org/x"]
        retention_days: 7
        listen: 0.0.0.0:8443
        token: 0123456789abcdef-long
        """)
    hall, desk, demo, door = c.cameras
    assert (hall.source, hall.kind, desk.source, demo.kind, door.kind) == \
        ("webcam:0", "webcam", "webcam:1", "file", "stream")
    assert demo.source == str(folder / "walk.mp4")  # relative to the config file's folder
    # what the runner opens: a file is played as a live camera, looped; the others as they are
    assert (demo.spec, hall.spec, door.spec) == (f"loop:{folder / 'walk.mp4'}", "webcam:0", door.source)
    assert hall.ignores(50, 25) and not hall.ignores(150, 25) and hall.ignores(250, 250)
    assert (c.match.threshold, c.match.target_fpir, c.match.calibration) == (0.8, 0.001, str(folder / "cal.json"))
    assert c.outputs.mqtt == "mqtt://127.0.0.1:1883/site" and len(c.outputs.webhooks) == 2
    assert c.may_see_together("desk", "hall") and not c.may_see_together("hall", "hall")
    assert not c.may_see_together("hall", "demo")
    assert (c.retention_days, c.listen) == (7, "0.0.0.0:8443")
    assert "0123456789abcdef" not in repr(c)  # the token is a secret


def test_threshold_auto_and_overrides_are_checked_by_the_same_rules(folder):
    assert _load(folder, SMALLEST + "threshold: auto\n").match.threshold is None
    with pytest.raises(UserError, match=r"token: is required to listen on 0\.0\.0\.0:8090"):
        _load(folder, SMALLEST, {"listen": "0.0.0.0:8090"})
    c = _load(folder, SMALLEST, {"listen": "0.0.0.0:8090", "token": "x" * 16})
    assert c.listen == "0.0.0.0:8090"


def test_the_documented_keys_are_the_accepted_keys():
    # the docs are generated from KEYS and CAMERA_KEYS: a key the loader reads but the docs lack cannot exist
    assert set(KEYS) == set(wc._TOP) | set(wc._MATCH) | set(wc._OUTPUTS) | set(wc._AS_IS)
    assert set(CAMERA_KEYS) == {f.name for f in dataclasses.fields(CameraConfig)}
    assert {k for k, f in wc._MATCH.items()} <= {f.name for f in dataclasses.fields(MatchConfig)}
    assert set(wc._OUTPUTS) <= {f.name for f in dataclasses.fields(OutputsConfig)}
    for key, doc in {**KEYS, **CAMERA_KEYS}.items():
        assert doc.strip() and "\n" not in doc, key


def _camera(**fields) -> str:
    cam = {"name": "hall", "source": '"rtsp://127.0.0.1:8554/hall"', **fields}
    return "gallery: people.db\noutput: out\ncameras:\n  - {" + ", ".join(f"{k}: {v}" for k, v in cam.items()) + "}\n"


BASE = "gallery: people.db\noutput: out\ncameras: [{name: hall, source: 0}, {name: desk, source: 1}]\n"

BAD = [  # (config text, what the one line says)
    (BASE.replace("cameras", "camras"), "camras: unknown key (did you mean cameras?)"),
    (BASE + "tresholds: 1\n", "tresholds: unknown key (did you mean threshold?)"),
    (_camera(fram_step=2), "cameras[0].fram_step: unknown key (did you mean frame_step?)"),
    (_camera(colour="red"), "cameras[0].colour: unknown key (known keys: name, source, rotate, frame_step, ignore)"),
    (BASE.replace("source: 1}", "source: 1, frame_step: x}"),
     "cameras[1].frame_step: must be an integer ≥ 1, got 'x'"),
    (_camera(frame_step=0), "cameras[0].frame_step: must be an integer ≥ 1, got 0"),
    (_camera(frame_step=1.5), "cameras[0].frame_step: must be an integer ≥ 1, got 1.5"),
    (_camera(frame_step="true"), "cameras[0].frame_step: must be an integer ≥ 1, got True"),
    (_camera(rotate=45), "cameras[0].rotate: must be 0, 90, 180 or 270 (degrees clockwise), got 45"),
    (_camera(name='"a/b"'), "cameras[0].name: must be 1 to 64 ASCII letters"),
    (_camera(name='".hidden"'), "cameras[0].name: must be 1 to 64"),
    (_camera(name="5"), "cameras[0].name: must be 1 to 64 ASCII letters, digits, _ . -, starting with a letter or "
                        "digit, got 5"),
    (_camera(name="x" * 65), "cameras[0].name: must be 1 to 64"),
    (BASE.replace("desk", "HALL"), "cameras[1].name: 'HALL' is taken by cameras[0]"),
    (BASE.replace("name: desk, ", ""), "cameras[1].name: missing: a camera needs name, source"),
    (BASE.replace("source: 1", "source: ftp://x/y"), "cameras[1].source: 'ftp://x/y': the scheme must be rtsp or "
                                                     "rtsps or http or https, got 'ftp'"),
    (_camera(source='"rtsp://:554/x"'), "cameras[0].source: 'rtsp://:554/x': no host"),
    (_camera(source='"http://cam:99999/x"'), "cameras[0].source: 'http://cam:99999/x': the port must be"),
    (_camera(source="missing.mp4"), "cameras[0].source: file not found: "),
    (_camera(source="-1"), "cameras[0].source: must be a stream URL, a video file or a webcam number, "
                           "got -1"),
    (_camera(source="[1]"), "cameras[0].source: must be a stream URL, a video file or a webcam number, got [1]"),
    (_camera(ignore="[[10, 20, 30, 40]]"), "cameras[0].ignore[0]: a polygon is a list of at least 3 [x, y] points "
                                           "in pixels (≥ 0), got [10, 20, 30, 40] (a box is its 4 corners"),
    (_camera(ignore="[[[0, 0], [5, 5]]]"), "cameras[0].ignore[0]: a polygon is a list of at least 3"),
    (_camera(ignore="[[[0, 0], [5, 5], [-1, 3]]]"), "cameras[0].ignore[0]: a polygon is a list of at least 3"),
    (_camera(ignore="[[0, 0], [5, 5], [1, 3]]"), "cameras[0].ignore[0]: a polygon"),
    (_camera(ignore="{a: 1}"), "cameras[0].ignore: must be a list of polygons"),
    ("gallery: people.db\noutput: out\ncameras:\n  - hall\n", "cameras[0]: a camera is a mapping such as"),
    (BASE.replace("cameras: [{name: hall, source: 0}, {name: desk, source: 1}]", "cameras: []"),
     "cameras: must be a list of at least one camera"),
    (BASE.replace("gallery: people.db\n", ""), "gallery: missing: a watch config needs gallery, output, cameras"),
    (BASE.replace("people.db", "nobody.db"), "gallery: file not found: "),
    (BASE.replace("people.db", "notes.txt"), "gallery: "),
    (BASE.replace("people.db", "walk.mp4"), "not a gallery file"),
    (BASE.replace("output: out", "output: notes.txt"), "output: "),
    (BASE.replace("output: out", "output: 3"), "output: must be a path, got 3"),
    (BASE + "threshold: high\n", "threshold: must be auto or a distance ≥ 0, got 'high'"),
    (BASE + "threshold: -0.5\n", "threshold: must be auto or a distance ≥ 0, got -0.5"),
    (BASE + "threshold: .nan\n", "threshold: must be auto or a distance ≥ 0, got nan"),
    (BASE + "target_fpir: 1.5\n", "target_fpir: must be a rate between 0 and 1 (exclusive), got 1.5"),
    (BASE + "calibration: gone.json\n", "calibration: file not found: "),
    (BASE + "overlaps: [[hall, kitchen]]\n", "overlaps[0]: 'kitchen' is not one of the cameras (hall, desk)"),
    (BASE + "overlaps: [[hall, hall]]\n", "overlaps[0]: must be a pair of two camera names [a, b], got ['hall', "
                                          "'hall']"),
    (BASE + "overlaps: [[hall, desk, hall]]\n", "overlaps[0]: must be a pair"),
    (BASE + "overlaps: hall\n", "overlaps: must be a list of camera pairs"),
    (BASE + "mqtt: http://broker/x\n", "mqtt: 'http://broker/x': the scheme must be mqtt, got 'http'"),
    (BASE + "mqtt: [a]\n", "mqtt: must be a URL, got ['a']"),
    (BASE + "webhooks: [http://ok/x, 'ftp://bad/y']\n", "webhooks[1]: 'ftp://bad/y': the scheme must be http or "
                                                        "https"),
    (BASE + "webhooks: http://ok/x\n", "webhooks: must be a list of URLs"),
    (BASE + "retention_days: -1\n", "retention_days: must be a number of days ≥ 0 (0 keeps everything), got -1"),
    (BASE + "retention_days: soon\n", "retention_days: must be a number of days"),
    (BASE + "listen: 8090\n", "listen: must be HOST:PORT such as 127.0.0.1:8090, got 8090"),
    (BASE + "listen: cams.example.org:8090\n", "listen: the host must be an IP address or localhost"),
    (BASE + "listen: 127.0.0.1:70000\n", "listen: the port must be 1 to 65535, got 70000"),
    (BASE + "listen: 0.0.0.0:8090\n", "token: is required to listen on 0.0.0.0:8090 (not the loopback)"),
    (BASE + "token: short\n", "token: must be at least 16 printable ASCII characters"),
    (BASE + "token: 'has spaces in it, sixteen+'\n", "token: must be at least 16 printable ASCII characters"),
    (BASE + "gallery: again.db\n", "not valid YAML at line 4, column 1: the key 'gallery' is given twice"),
    (BASE + "cameras: [\n", "not valid YAML at line"),
    ("- gallery\n- output\n", "a watch config is a mapping of keys (gallery, output, cameras, ...), got a list"),
    ("# nothing yet\n", "the file is empty: a watch config needs gallery, output, cameras"),
]


@pytest.mark.parametrize("text, says", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_a_mistake_is_one_line_naming_its_key(folder, text, says):
    with pytest.raises(UserError) as err:
        _load(folder, text)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{folder / 'watch.yaml'}: ")
    assert says in line, line
    assert err.value.exit_code == 2


def test_the_command_turns_it_into_exit_2_and_one_line(folder, capsys):
    # every command is wrapped in reports_user_errors; so is the watch command that will load this file
    load = reports_user_errors(lambda: _load(folder, _camera(frame_step=0)) and 0)
    assert load() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "cameras[0].frame_step" in err


def test_a_missing_file_is_named(folder):
    with pytest.raises(UserError, match="watch config not found"):
        load_watch_config(folder / "nope.yaml")


def test_constructed_by_code_the_same_checks_hold():
    with pytest.raises(ValueError, match="frame_step: must be an integer ≥ 1"):
        CameraConfig("hall", "webcam:0", frame_step=0)
    cam = CameraConfig("hall", "webcam:0")
    with pytest.raises(ValueError, match=r"cameras\[1\]\.name: 'hall' is taken"):
        WatchConfig(Path("g.db"), Path("out"), (cam, cam))


def test_a_threshold_in_exponent_form_is_a_number(tmp_path):
    """PyYAML reads 1.0e9 (no sign in the exponent) as text; a user writing it means the number."""
    from allinone.watch.config import load_watch_config
    from allinone.gallery.store import GalleryStore
    db = tmp_path / "people.db"
    GalleryStore(db, create=True).close()
    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"gallery: {db}\noutput: out\nthreshold: 1.0e9\ncameras:\n"
                   "  - {name: hall, source: 'rtsp://127.0.0.1:8554/hall'}\n")
    assert load_watch_config(cfg).match.threshold == 1e9
