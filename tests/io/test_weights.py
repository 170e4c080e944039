"""Model weights: manifest, verified downloads from a local HTTP server (127.0.0.1 only), lock file, messages."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import pytest

import allinone
from allinone.io import weights as W
from allinone.commands.weights import weights_command
from allinone.errors import UserError

FAST = W.DownloadPolicy(attempts=3, backoff_s=0.01, timeout_s=5.0)
SEG_FILES = ("deploy.yaml", "model.pdmodel", "model.pdiparams")


# --- a local HTTP server, started by the test itself ------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        owner: LocalServer = self.server.owner  # type: ignore[attr-defined]
        with owner.lock:
            owner.hits[self.path] += 1
            n = owner.hits[self.path]
        route = owner.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        status, body, declared = route(n)
        if status != 200:
            self.send_error(status)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if declared is None else declared))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # silence
        pass


class LocalServer:
    def __init__(self) -> None:
        self.routes: dict = {}
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def serve(self, path: str, body: bytes) -> str:
        self.routes[path] = lambda n: (200, body, None)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    srv = LocalServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(timeout=5)


def _dead_url(path: str) -> str:
    """A URL on 127.0.0.1 at a port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# --- real-ish payloads -------------------------------------------------------------------------------------------

def _fake_pt(seed: int = 0) -> bytes:
    """A file in torch.save's zip layout (archive/data.pkl ...), with some payload."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00." + bytes([seed]) * 64)
        zf.writestr("archive/data/0", os.urandom(4096))
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _seg_members(prefix: str = "segmodel/") -> dict[str, bytes]:
    return {f"{prefix}deploy.yaml": b"Deploy:\n  model: model.pdmodel\n  params: model.pdiparams\n",
            f"{prefix}model.pdmodel": b"PDMODEL" + os.urandom(300),
            f"{prefix}model.pdiparams": os.urandom(1000)}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _gait_spec(url: str, **kw) -> W.ModelSpec:
    return W.ModelSpec(key="gait", target="GaitBase_DA-180000.pt", url=url, member="GaitBase_DA-180000.pt",
                       description="test gait", licence="test", **kw)


def _seg_spec(url: str, **kw) -> W.ModelSpec:
    return W.ModelSpec(key="seg", target="segmodel", url=url, member="deploy.yaml", files=SEG_FILES,
                       description="test seg", licence="test", **kw)


def _plain_spec(url: str, key: str = "detector", **kw) -> W.ModelSpec:
    return W.ModelSpec(key=key, target=f"{key}.pt", url=url, description=f"test {key}", licence="test", **kw)


def _tree(root: Path) -> list[str]:
    """Every path under root (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# --- downloads -------------------------------------------------------------------------------------------------

def test_zip_member_downloaded_verified_and_moved_into_place_atomically(server, tmp_path, monkeypatch):
    pt = _fake_pt()
    url = server.serve("/gait.zip", _zip({"GREW/Baseline/GaitBase_DA/checkpoints/GaitBase_DA-180000.pt": pt,
                                          "GREW/Baseline/GaitBase_DA/config.yaml": b"x: 1\n"}))
    spec = _gait_spec(url, size=len(pt), sha256=_sha(pt))
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b))[1])
    root = tmp_path / "ck"

    path = W.ensure(spec, root, progress=False, policy=FAST)

    assert path == root / "GaitBase_DA-180000.pt"
    assert path.read_bytes() == pt
    assert _tree(root) == ["GaitBase_DA-180000.pt"]  # no zip, no temporaries, no lock (hash was known)
    final = [(a, b) for a, b in replaced if b == path]
    assert len(final) == 1 and final[0][0].parent == path.parent and final[0][0] != path
    # a second call uses the verified file without the network
    assert W.ensure(spec, root, progress=False, policy=FAST) == path
    assert server.hits["/gait.zip"] == 1
    assert W.weight_status(spec, root).state == "verified"


def test_folder_model_unpacked_from_zip(server, tmp_path):
    members = _seg_members("human_pp_humansegv2_mobile/")
    url = server.serve("/seg.zip", _zip(members))
    path = W.ensure(_seg_spec(url), tmp_path, progress=False, policy=FAST)
    assert path == tmp_path / "segmodel" and path.is_dir()
    for name in SEG_FILES:
        assert (path / name).read_bytes() == members[f"human_pp_humansegv2_mobile/{name}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmodel", W.LOCK_NAME]


def test_plain_file_download(server, tmp_path):
    pt = _fake_pt(3)
    url = server.serve("/yolo.pt", pt)
    path = W.ensure(_plain_spec(url), tmp_path, progress=False, policy=FAST)
    assert path.read_bytes() == pt and path.name == "detector.pt"


def test_sha256_mismatch_leaves_nothing_behind(server, tmp_path):
    pt = _fake_pt()
    url = server.serve("/gait.zip", _zip({"x/GaitBase_DA-180000.pt": pt}))
    spec = _gait_spec(url, sha256=_sha(pt + b"other"))
    with pytest.raises(W.DownloadError) as err:
        W.ensure(spec, tmp_path, progress=False, policy=FAST)
    assert url in str(err.value) and "sha256" in str(err.value)
    assert _tree(tmp_path) == []


def test_size_mismatch_leaves_nothing_behind(server, tmp_path):
    pt = _fake_pt()
    url = server.serve("/d.pt", pt)
    with pytest.raises(W.DownloadError, match="bytes"):
        W.ensure(_plain_spec(url, size=len(pt) + 1), tmp_path, progress=False, policy=FAST)
    assert _tree(tmp_path) == []


def test_truncated_file_on_disk_is_reported_and_not_used(server, tmp_path):
    pt = _fake_pt()
    url = server.serve("/gait.zip", _zip({"GaitBase_DA-180000.pt": pt}))
    spec = _gait_spec(url, size=len(pt), sha256=_sha(pt))
    target = tmp_path / "GaitBase_DA-180000.pt"
    target.write_bytes(pt[: len(pt) // 2])
    with pytest.raises(W.CorruptWeights) as err:
        W.ensure(spec, tmp_path, progress=False, policy=FAST)
    msg = str(err.value)
    assert str(target) in msg and "--download" in msg and "\n" not in msg
    assert target.read_bytes() == pt[: len(pt) // 2]  # the user's file is left alone
    assert server.hits["/gait.zip"] == 0
    with pytest.raises(W.CorruptWeights):
        W.resolve_all(["gait"], tmp_path, specs=[spec], progress=False, policy=FAST)


def test_truncated_file_without_known_hash_fails_structural_check(tmp_path):
    spec = _gait_spec("https://example.invalid/g.zip")
    target = tmp_path / "GaitBase_DA-180000.pt"
    target.write_bytes(_fake_pt()[:-30])  # the zip's central directory is cut off
    with pytest.raises(W.CorruptWeights, match="truncated"):
        W.ensure(spec, tmp_path, download=False)


def test_404_is_final_and_names_the_url(server, tmp_path):
    url = server.url("/nope.zip")
    with pytest.raises(W.DownloadError) as err:
        W.ensure(_gait_spec(url), tmp_path, progress=False, policy=FAST)
    assert url in str(err.value) and "404" in str(err.value)
    assert server.hits["/nope.zip"] == 1
    assert _tree(tmp_path) == []


def test_two_503_then_success_is_retried(server, tmp_path):
    pt = _fake_pt()
    server.routes["/flaky.pt"] = lambda n: (503, b"", None) if n <= 2 else (200, pt, None)
    path = W.ensure(_plain_spec(server.url("/flaky.pt")), tmp_path, progress=False, policy=FAST)
    assert path.read_bytes() == pt
    assert server.hits["/flaky.pt"] == 3


def test_connection_cut_mid_transfer_is_retried(server, tmp_path):
    pt = _fake_pt()
    server.routes["/cut.pt"] = lambda n: (200, pt[:100], len(pt)) if n == 1 else (200, pt, None)
    path = W.ensure(_plain_spec(server.url("/cut.pt")), tmp_path, progress=False, policy=FAST)
    assert path.read_bytes() == pt and server.hits["/cut.pt"] == 2
    assert _tree(tmp_path) == ["detector.pt", W.LOCK_NAME]


def test_always_503_gives_missing_weights_after_all_tries(server, tmp_path):
    server.routes["/down.pt"] = lambda n: (503, b"", None)
    with pytest.raises(W.MissingWeights, match="503"):
        W.ensure(_plain_spec(server.url("/down.pt")), tmp_path, progress=False, policy=FAST)
    assert server.hits["/down.pt"] == FAST.attempts
    assert _tree(tmp_path) == []


def test_unresolvable_host_is_not_retried(tmp_path, monkeypatch):
    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    slow = W.DownloadPolicy(attempts=4, backoff_s=60.0, timeout_s=5.0)  # a retry would sleep a minute
    with pytest.raises(W.MissingWeights, match="does not resolve") as err:
        W.ensure(_plain_spec("https://weights.example.invalid/d.pt"), tmp_path, progress=False, policy=slow)
    assert lookups == ["weights.example.invalid"]
    assert "https://weights.example.invalid/d.pt" in str(err.value)
    assert _tree(tmp_path) == []


def test_offline_lists_every_missing_file_with_url_and_target(tmp_path):
    root = tmp_path / "ck"
    specs = [_gait_spec(_dead_url("/g.zip")), _seg_spec(_dead_url("/s.zip")), _plain_spec(_dead_url("/d.pt"))]
    with pytest.raises(W.MissingWeights) as err:
        W.resolve_all([s.key for s in specs], root, specs=specs, progress=False, policy=FAST)
    msg = str(err.value)
    first, *rest = msg.splitlines()
    assert first.startswith("3 model weights missing (gait, seg, detector)")
    for spec in specs:
        assert spec.url in msg
        assert str(root / spec.target) in msg
    assert "GaitBase_DA-180000.pt" in "\n".join(rest) and "deploy.yaml" in msg
    assert [e.spec.key for e in err.value.entries] == ["gait", "seg", "detector"]
    assert isinstance(err.value, UserError)
    assert not root.exists()


def test_download_disabled_gives_missing_weights_without_network(server, tmp_path):
    url = server.serve("/d.pt", _fake_pt())
    with pytest.raises(W.MissingWeights) as err:
        W.resolve_all(["detector"], tmp_path, download=False, specs=[_plain_spec(url)])
    assert "turned off" in str(err.value) and str(tmp_path / "detector.pt") in str(err.value)
    assert server.hits["/d.pt"] == 0


def test_resolve_all_returns_present_paths(server, tmp_path):
    specs = [_plain_spec(server.serve("/a.pt", _fake_pt(1)), key="a"),
             _plain_spec(server.serve("/b.pt", _fake_pt(2)), key="b")]
    got = W.resolve_all(["a", "b"], tmp_path, specs=specs, progress=False, policy=FAST)
    assert got == {"a": tmp_path / "a.pt", "b": tmp_path / "b.pt"}
    with pytest.raises(ValueError, match="unknown"):
        W.resolve_all(["c"], tmp_path, specs=specs)


# --- lock file -------------------------------------------------------------------------------------------------

def test_lock_records_first_download_and_catches_later_changes(server, tmp_path):
    pt = _fake_pt()
    spec = _gait_spec(server.serve("/g.zip", _zip({"a/b/GaitBase_DA-180000.pt": pt})))
    path = W.ensure(spec, tmp_path, progress=False, policy=FAST)
    lock = json.loads((tmp_path / W.LOCK_NAME).read_text())
    assert lock["gait"]["sha256"] == _sha(pt) and lock["gait"]["size"] == len(pt)
    assert W.weight_status(spec, tmp_path).state == "verified"

    damaged = bytearray(pt)
    damaged[len(pt) // 3] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(damaged))
    with pytest.raises(W.CorruptWeights) as err:
        W.ensure(spec, tmp_path, progress=False, policy=FAST)
    assert str(path) in str(err.value) and W.LOCK_NAME in str(err.value)
    assert server.hits["/g.zip"] == 1
    path.write_bytes(pt[:-1])
    with pytest.raises(W.CorruptWeights, match="bytes"):
        W.ensure(spec, tmp_path, progress=False, policy=FAST)


def test_lock_entry_for_another_url_is_not_applied(tmp_path):
    pt = _fake_pt()
    (tmp_path / "detector.pt").write_bytes(pt)
    (tmp_path / W.LOCK_NAME).write_text(json.dumps(
        {"detector": {"sha256": _sha(b"old"), "size": 3, "url": "https://old.example/d.pt"}}))
    assert W.weight_status(_plain_spec("https://old.example/d.pt"), tmp_path).state == "corrupt"
    assert W.weight_status(_plain_spec("https://new.example/d.pt"), tmp_path).state == "present"
    (tmp_path / W.LOCK_NAME).write_text("{not json")
    with pytest.raises(UserError, match=W.LOCK_NAME):
        W.ensure(_plain_spec("https://new.example/d.pt"), tmp_path, download=False)


def test_folder_lock_uses_tree_digest(server, tmp_path):
    members = _seg_members()
    spec = _seg_spec(server.serve("/s.zip", _zip(members)))
    W.ensure(spec, tmp_path, progress=False, policy=FAST)
    h = hashlib.sha256()
    for name in SEG_FILES:  # the documented digest, computed independently
        h.update(name.encode() + b"\0" + _sha(members[f"segmodel/{name}"]).encode() + b"\n")
    entry = json.loads((tmp_path / W.LOCK_NAME).read_text())["seg"]
    assert entry["sha256"] == h.hexdigest()
    assert entry["size"] == sum(len(members[f"segmodel/{n}"]) for n in SEG_FILES)
    (tmp_path / "segmodel" / "model.pdiparams").write_bytes(os.urandom(1000))
    assert W.weight_status(spec, tmp_path).state == "corrupt"


def test_failed_load_check_records_nothing_and_places_nothing(server, tmp_path):
    spec = _plain_spec(server.serve("/d.pt", _fake_pt()))
    seen: list[Path] = []

    def refuse(p: Path) -> None:
        seen.append(p)
        raise UserError("not a detector", p)

    with pytest.raises(W.DownloadError, match="does not load"):
        W.ensure(spec, tmp_path, progress=False, policy=FAST, check=refuse)
    assert seen and seen[0].name.endswith("detector.pt")  # the loader sees the target's suffix
    assert _tree(tmp_path) == []


def test_ctrl_c_during_install_removes_temporaries(server, tmp_path):
    spec = _seg_spec(server.serve("/s.zip", _zip(_seg_members())))

    def interrupt(p: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        W.ensure(spec, tmp_path, progress=False, policy=FAST, check=interrupt)
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("bad", ["segmodel/../evil.txt", "segmodel/sub/../../evil.txt"])
def test_zip_path_traversal_is_refused(server, tmp_path, bad):
    root = tmp_path / "ck"
    members = _seg_members() | {bad: b"owned"}
    spec = _seg_spec(server.serve("/s.zip", _zip(members)))
    with pytest.raises(W.DownloadError, match="unsafe"):
        W.ensure(spec, root, progress=False, policy=FAST)
    assert _tree(root) == []
    assert not (tmp_path / "evil.txt").exists()


def test_archive_without_the_member_is_a_clear_error(server, tmp_path):
    spec = _gait_spec(server.serve("/g.zip", _zip({"other.pt": _fake_pt()})))
    with pytest.raises(W.DownloadError, match="GaitBase_DA-180000.pt"):
        W.ensure(spec, tmp_path, progress=False, policy=FAST)
    spec = _gait_spec(server.serve("/two.zip", _zip({"a/GaitBase_DA-180000.pt": _fake_pt(1),
                                                     "b/GaitBase_DA-180000.pt": _fake_pt(2)})))
    with pytest.raises(W.DownloadError, match="found 2"):
        W.ensure(spec, tmp_path, progress=False, policy=FAST)
    spec = _gait_spec(server.serve("/notzip.zip", b"<html>not a zip</html>"))
    with pytest.raises(W.DownloadError, match="zip"):
        W.ensure(spec, tmp_path, progress=False, policy=FAST)
    assert _tree(tmp_path) == []


# --- structural checks -----------------------------------------------------------------------------------------

def test_structural_check_accepts_the_real_paddle_folder(shared):
    folder = shared / "weights" / "pphumanseg_v1_lite_192x192_with_softmax"
    W.structural_check(_seg_spec("https://x.invalid/s.zip"), folder)


def test_structural_check_refuses_incomplete_folder(tmp_path):
    (tmp_path / "deploy.yaml").write_text("Deploy:\n  model: model.pdmodel\n")
    (tmp_path / "model.pdmodel").write_bytes(b"x")
    with pytest.raises(UserError, match="model.pdiparams"):
        W.structural_check(_seg_spec("https://x.invalid/s.zip"), tmp_path)


def test_structural_check_accepts_torch_legacy_header(tmp_path):
    p = tmp_path / "old.pt"
    # torch's legacy magic number 0x1950a86a20f9469cfc6c pickled as a protocol-2 LONG1, little-endian
    p.write_bytes(b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b".rest")
    W.structural_check(_plain_spec("https://x.invalid/d.pt", key="old"), p)
    p.write_bytes(b"<html>error page</html>")
    with pytest.raises(UserError):
        W.structural_check(_plain_spec("https://x.invalid/d.pt", key="old"), p)


# --- manifest and folders --------------------------------------------------------------------------------------

def test_default_manifest_integrity(tmp_path):
    specs = W.default_models()
    keys = [s.key for s in specs]
    assert set(keys) == {"gait", "seg", "detector"} and len(keys) == len(set(keys))
    assert len({s.target for s in specs}) == len(specs)
    for s in specs:
        assert s.url.startswith("https://")
        rel = PurePosixPath(s.target)
        assert not rel.is_absolute() and ".." not in rel.parts
        root = tmp_path / "ck"
        assert root in s.path(root).parents
        assert s.sha256 is None or (len(s.sha256) == 64 and all(c in "0123456789abcdef" for c in s.sha256))
        assert s.licence and s.description
        if s.member:
            assert s.url.endswith(".zip")
    by_key = {s.key: s for s in specs}
    assert by_key["detector"].licence.startswith("AGPL-3.0")
    assert by_key["seg"].files == SEG_FILES and "Apache-2.0" in by_key["seg"].licence
    assert by_key["gait"].member == "GaitBase_DA-180000.pt" and by_key["gait"].target == "GaitBase_DA-180000.pt"


@pytest.mark.parametrize("target", ["/abs.pt", "../up.pt", "a/../b.pt", "a\\b.pt", ""])
def test_spec_refuses_targets_outside_the_folder(target):
    with pytest.raises(ValueError):
        W.ModelSpec(key="k", target=target, url="https://x/y", description="d", licence="l")


def test_spec_refuses_malformed_sha():
    with pytest.raises(ValueError):
        W.ModelSpec(key="k", target="k.pt", url="https://x/y", description="d", licence="l", sha256="ABC")


def test_checkpoints_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    assert W.checkpoints_dir(None) == Path(allinone.__file__).resolve().parents[1] / "checkpoints"
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "env"))
    assert W.checkpoints_dir(None) == tmp_path / "env"
    assert W.checkpoints_dir(str(tmp_path / "cli")) == tmp_path / "cli"


# --- the weights command ---------------------------------------------------------------------------------------

def _rows(out: str) -> dict[str, tuple[str, str]]:
    """{key: (state, path)} from the command's table rows."""
    rows = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in ("verified", "present", "missing", "corrupt"):
            rows[parts[0]] = (parts[1], parts[2])
    return rows


def test_weights_command_lists_present_and_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "elsewhere"))
    (tmp_path / "GaitBase_DA-180000.pt").write_bytes(_fake_pt())
    code = weights_command(["--checkpoints", str(tmp_path)])
    out = capsys.readouterr().out
    rows = _rows(out)
    assert code == 1
    assert rows["gait"] == ("present", str(tmp_path / "GaitBase_DA-180000.pt"))
    assert rows["seg"][0] == "missing" and rows["detector"] == ("missing", str(tmp_path / "yolo11n.pt"))
    for s in W.default_models():
        assert s.url in out
    assert "AGPL-3.0" in out


def test_weights_command_downloads_missing_and_verifies(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
    specs = [_plain_spec(server.serve("/d.pt", _fake_pt())), _seg_spec(server.serve("/s.zip", _zip(_seg_members())))]
    assert weights_command(["--quiet"], specs=specs) == 1
    assert set(_rows(capsys.readouterr().out).values()) == {("missing", str(tmp_path / "detector.pt")),
                                                            ("missing", str(tmp_path / "segmodel") + os.sep)}
    assert weights_command(["--download", "--quiet"], specs=specs) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["detector"][0] == "verified" and rows["seg"][0] == "verified"


def test_weights_command_download_failure_exits_2(tmp_path, capsys, monkeypatch):
    specs = [_plain_spec(_dead_url("/d.pt"))]
    fast = W.DownloadPolicy(attempts=1, backoff_s=0.0, timeout_s=5.0)
    monkeypatch.setattr(W, "DownloadPolicy", lambda: fast)  # the command runs with the default policy
    code = weights_command(["--checkpoints", str(tmp_path), "--download", "--quiet"], specs=specs)
    cap = capsys.readouterr()
    assert code == 2 and "1 model weight missing" in cap.err and specs[0].url in cap.err
    assert _rows(cap.out)["detector"][0] == "missing"
