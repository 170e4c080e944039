"""Model weights: the manifest of default models, verified downloads into the checkpoints folder, and the
``python main.py weights`` command.

A model's *target* is a file or a folder under the checkpoints folder. Its expected size and sha256 come from the
manifest when the publisher gives them; otherwise the first download that verifies and loads records them in
``<checkpoints>/weights.lock.json`` and every later use is checked against that record. A present file that does
not match is reported and never used, and never deleted by us.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

from . import __version__
from .errors import UserError
from .output import sha256_file

log = logging.getLogger(__name__)

ENV_VAR = "ALLINONE_CHECKPOINTS"
LOCK_NAME = "weights.lock.json"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
# torch.save's legacy (non-zip) format starts with a pickled magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_TRANSIENT_HTTP = frozenset({408, 425, 429})  # plus every 5xx

Check = Callable[[Path], object]


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model and where it lives under the checkpoints folder."""

    key: str
    target: str  # POSIX path relative to the checkpoints folder: a file, or a folder when `files` is set
    url: str
    description: str
    licence: str
    member: str | None = None  # zip downloads: the member name (matched at the end of a member path) to take;
    #                            for a folder target, the file that marks the folder inside the archive
    files: tuple[str, ...] = ()  # folder targets: the files that must be in the folder
    size: int | None = None  # bytes of the target (a folder: the sum of `files`); None = not published
    sha256: str | None = None  # of the target (a folder: see tree_sha256); None = not published

    def __post_init__(self) -> None:
        rel = PurePosixPath(self.target)
        if not self.key or not self.target or rel.is_absolute() or "\\" in self.target \
                or any(p in ("", ".", "..") for p in self.target.split("/")):
            raise ValueError(f"model {self.key!r}: target must be a plain relative path, got {self.target!r}")
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"model {self.key!r}: sha256 must be 64 lowercase hex characters")
        if self.size is not None and self.size < 0:
            raise ValueError(f"model {self.key!r}: size must be >= 0")
        if self.files and self.member is None:
            raise ValueError(f"model {self.key!r}: a folder target needs a zip download (member)")

    @property
    def is_folder(self) -> bool:
        return bool(self.files)

    def path(self, root: Path) -> Path:
        """Where this model lives under ``root``."""
        return Path(root).joinpath(*PurePosixPath(self.target).parts)


def default_models() -> tuple[ModelSpec, ...]:
    """The models a default run uses. No publisher gives a checksum for these, so size/sha256 are None and the
    lock file records them on first download."""
    seg_name = "human_pp_humansegv2_mobile_192x192_inference_model_with_softmax"
    return (
        ModelSpec(
            key="gait",
            target="GaitBase_DA-180000.pt",
            url="https://github.com/ShiqiYu/OpenGait/releases/download/v2.0/pretrained_grew_gaitbase.zip",
            member="GaitBase_DA-180000.pt",
            description="OpenGait GaitBase (DA) trained on GREW, iteration 180000: the gait embedding model",
            licence="OpenGait ships no licence file; its README limits the code to academic use, no commercial "
                    "use. The weights were trained on GREW: check that dataset's terms too.",
        ),
        ModelSpec(
            key="seg",
            target=seg_name,
            url=f"https://paddleseg.bj.bcebos.com/dygraph/pp_humanseg_v2/{seg_name}.zip",
            member="deploy.yaml",
            files=("deploy.yaml", "model.pdmodel", "model.pdiparams"),
            description="PP-HumanSeg v2 mobile 192x192, PaddleSeg inference model with softmax output: "
                        "person silhouettes",
            licence="Apache-2.0 (PaddleSeg)",
        ),
        ModelSpec(
            key="detector",
            target="yolo11n.pt",
            url="https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11n.pt",
            description="Ultralytics YOLO11n, COCO classes (person = 0): the person detector",
            licence="AGPL-3.0 (Ultralytics): software that uses it and is distributed or run as a network "
                    "service takes on AGPL-3.0 obligations; Ultralytics sells an Enterprise licence otherwise",
        ),
    )


@dataclass(frozen=True)
class DownloadPolicy:
    # Tries per file for transient failures (timeouts, resets, refused connections, 5xx). More tries ride out a
    # flaky link but make an offline run wait longer before it says what to download by hand.
    attempts: int = 4
    # Wait before the second try, doubled for each further one (1 s, 2 s, 4 s).
    backoff_s: float = 1.0
    # Socket timeout for connecting and for each read; a stalled transfer counts as a transient failure.
    timeout_s: float = 60.0


# ---------------------------------------------------------------------------------------------------------------
# errors


@dataclass(frozen=True)
class MissingEntry:
    spec: ModelSpec
    path: Path
    reason: str


class MissingWeights(UserError):
    """Needed weights are absent and could not be downloaded. The first line of the message is a complete
    summary; one block per model follows with its URL and the exact path to place it at."""

    def __init__(self, entries: Sequence[MissingEntry]) -> None:
        self.entries = tuple(entries)
        super().__init__(_missing_message(self.entries))


class CorruptWeights(UserError):
    """A present weights file does not match its expected size/sha256 or structure; it is not used."""

    def __init__(self, path: Path, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{detail}; it is not used. Delete it, then run `python main.py weights --download` "
                         "(or put a good copy in its place)", path)


class DownloadError(UserError):
    """A download reached the server but failed for good (4xx, wrong checksum, bad archive, does not load)."""


def _missing_message(entries: Sequence[MissingEntry]) -> str:
    n = len(entries)
    reasons = {e.reason for e in entries}
    mixed = len(reasons) > 1
    why = "they could not be downloaded (reasons below)" if mixed else reasons.pop()
    lines = [f"{n} model weight{'s' if n != 1 else ''} missing ({', '.join(e.spec.key for e in entries)}): {why}. "
             "Download each from the address below and put it at the path shown, or run "
             "`python main.py weights --download` where there is internet access"]
    for e in entries:
        s = e.spec
        lines.append(f"  {s.key}: {s.description}")
        lines.append(f"    download: {s.url}")
        if s.is_folder:
            lines.append(f"    unzip:    the folder holding {s.member} ({', '.join(s.files)})")
            lines.append(f"    place at: {e.path}{os.sep}  (a folder with {', '.join(s.files)})")
        else:
            if s.member is not None:
                lines.append(f"    unzip:    the member whose name ends with {s.member}")
            lines.append(f"    place at: {e.path}")
        if mixed:
            lines.append(f"    why:      {e.reason}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# where weights live, hashes and the lock file


def checkpoints_dir(cli_value: str | os.PathLike | None = None) -> Path:
    """The checkpoints folder: ``--checkpoints DIR``, else $ALLINONE_CHECKPOINTS, else <repo>/checkpoints."""
    if cli_value is not None and str(cli_value).strip():
        return Path(cli_value).expanduser().absolute()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return Path(__file__).resolve().parent.parent / "checkpoints"


def tree_sha256(folder: Path, files: Sequence[str]) -> str:
    """Digest of a folder target: sha256 over ``name NUL sha256(file) LF`` for each listed file, in order."""
    h = hashlib.sha256()
    for name in files:
        h.update(f"{name}\0{sha256_file(folder / name)}\n".encode())
    return h.hexdigest()


def _size(spec: ModelSpec, path: Path) -> int:
    if spec.is_folder:
        return sum((path / name).stat().st_size for name in spec.files)
    return path.stat().st_size


def _digest(spec: ModelSpec, path: Path) -> str:
    return tree_sha256(path, spec.files) if spec.is_folder else sha256_file(path)


def read_lock(root: Path) -> dict[str, dict]:
    """The lock file's records ({key: {"sha256", "size", "url"}}); {} when there is none."""
    path = Path(root) / LOCK_NAME
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the weights lock file ({type(exc).__name__}); delete it and the hashes are "
                        "recorded again on the next download", path) from exc
    if not isinstance(doc, dict):
        raise UserError("the weights lock file is not a JSON object; delete it and the hashes are recorded "
                        "again on the next download", path)
    return doc


def _lock_expectation(spec: ModelSpec, lock: Mapping[str, object], lock_path: Path) -> tuple[int, str] | None:
    entry = lock.get(spec.key)
    if entry is None:
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
            and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool)):
        raise UserError(f"the entry for {spec.key!r} is malformed (needs sha256 and size); delete the file and "
                        "the hashes are recorded again on the next download", lock_path)
    if entry.get("url", spec.url) != spec.url:
        return None  # recorded for another download
    return entry["size"], entry["sha256"]


def _record(root: Path, spec: ModelSpec, size: int, sha: str) -> None:
    lock_path = root / LOCK_NAME
    lock = read_lock(root)
    lock[spec.key] = {"sha256": sha, "size": size, "url": spec.url}
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}-{LOCK_NAME}"
    try:
        tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, lock_path)
    except OSError as exc:
        _remove(tmp)
        log.warning("could not record the sha256 of %s in %s (%s); it will not be verified later",
                    spec.key, lock_path, exc)


# ---------------------------------------------------------------------------------------------------------------
# checking what is on disk


def structural_check(spec: ModelSpec, path: Path) -> None:
    """A cheap check that ``path`` has the model's form; raises UserError naming what is wrong.

    Folders: every listed file present and non-empty, deploy.yaml a YAML mapping with a Deploy entry. ``.pt`` /
    ``.pth``: a readable zip (torch.save's format; truncation loses its central directory) or torch's legacy
    pickle header. Other files: non-empty.
    """
    if spec.is_folder:
        if not path.is_dir():
            raise UserError("expected a folder", path)
        absent = [n for n in spec.files if not (path / n).is_file() or (path / n).stat().st_size == 0]
        if absent:
            raise UserError(f"incomplete model folder: {', '.join(absent)} missing or empty", path)
        if "deploy.yaml" in spec.files:
            import yaml

            try:
                doc = yaml.safe_load((path / "deploy.yaml").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise UserError(f"deploy.yaml is not readable YAML ({type(exc).__name__})", path) from exc
            if not isinstance(doc, dict) or "Deploy" not in doc:
                raise UserError("deploy.yaml has no Deploy section", path)
        return
    if not path.is_file():
        raise UserError("expected a file", path)
    if path.stat().st_size == 0:
        raise UserError("empty file", path)
    if path.suffix.lower() in (".pt", ".pth"):
        with open(path, "rb") as f:
            head = f.read(len(_TORCH_LEGACY_MAGIC))
        if head.startswith(_TORCH_LEGACY_MAGIC):
            return
        try:
            with zipfile.ZipFile(path) as zf:
                if not zf.namelist():
                    raise UserError("not a PyTorch checkpoint (an empty zip)", path)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise UserError("not a PyTorch checkpoint, or truncated (no readable zip directory)", path) from exc


@dataclass(frozen=True)
class WeightStatus:
    spec: ModelSpec
    path: Path
    state: str  # "verified" (sha256 checked) | "present" (nothing to check the hash against) | "missing" | "corrupt"
    detail: str = ""


def weight_status(spec: ModelSpec, root: Path, lock: Mapping[str, object] | None = None) -> WeightStatus:
    """What is at the model's target: checked against the manifest, else the lock, else only structurally."""
    root = Path(root)
    path = spec.path(root)
    if not path.exists():
        return WeightStatus(spec, path, "missing")
    lock = read_lock(root) if lock is None else lock
    if spec.is_folder != path.is_dir():
        return WeightStatus(spec, path, "corrupt", "expected a folder" if spec.is_folder else "expected a file")
    if spec.is_folder:
        absent = [n for n in spec.files if not (path / n).is_file()]
        if absent:
            return WeightStatus(spec, path, "corrupt", f"incomplete model folder: no {', '.join(absent)}")
    recorded = _lock_expectation(spec, lock, root / LOCK_NAME) if spec.sha256 is None else None
    size_exp = spec.size if spec.size is not None else (recorded[0] if recorded else None)
    sha_exp = spec.sha256 if spec.sha256 is not None else (recorded[1] if recorded else None)
    sha_src = "the manifest" if spec.sha256 is not None else LOCK_NAME
    size_src = "the manifest" if spec.size is not None else LOCK_NAME
    if size_exp is not None:
        size = _size(spec, path)
        if size != size_exp:
            return WeightStatus(spec, path, "corrupt", f"{size} bytes where {size_src} expects {size_exp} "
                                                       "(truncated or a different file)")
    if sha_exp is not None:
        sha = _digest(spec, path)
        if sha != sha_exp:
            return WeightStatus(spec, path, "corrupt", f"sha256 {sha[:16]}... differs from {sha_src} "
                                                       f"({sha_exp[:16]}...): damaged or a different file")
        return WeightStatus(spec, path, "verified", f"sha256 matches {sha_src}")
    try:
        structural_check(spec, path)
    except UserError as exc:
        detail = str(exc)
        prefix = f"{path}: "
        return WeightStatus(spec, path, "corrupt", detail[len(prefix):] if detail.startswith(prefix) else detail)
    return WeightStatus(spec, path, "present", "no known sha256 to check against")


# ---------------------------------------------------------------------------------------------------------------
# downloading


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove temporary %s: %s", path, exc)


def _temp_name(folder: Path, name: str, suffix: str = "") -> Path:
    """A sibling temporary name that keeps the target's name (and suffix) at its end, so loaders that dispatch
    on the suffix accept it."""
    return folder / f".tmp-{uuid.uuid4().hex[:8]}-{name}{suffix}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fetch(url: str, folder: Path, name: str, progress: bool, policy: DownloadPolicy,
           temps: list[Path]) -> Path:
    """Download ``url`` into a temporary file in ``folder``; retries transient failures. Raises DownloadError
    for a final HTTP error, _Unreachable when every try failed transiently. Nothing is created before the
    server answers."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": f"allinone/{__version__}"})
    last = "no attempt made"
    for attempt in range(max(1, policy.attempts)):
        if attempt:
            wait = policy.backoff_s * 2 ** (attempt - 1)
            log.warning("download of %s failed (%s); retrying in %.1f s", url, last, wait)
            time.sleep(wait)
        tmp: Path | None = None
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout_s) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                tmp = _temp_name(folder, name, ".download")
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    out = open(tmp, "xb")
                except OSError as exc:
                    raise UserError(f"cannot write into the checkpoints folder: {exc.strerror or exc}",
                                    folder) from exc
                temps.append(tmp)
                got = 0
                with out, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                               disable=not progress, leave=False) as bar:
                    while chunk := resp.read(_CHUNK):
                        try:
                            out.write(chunk)
                        except OSError as exc:
                            raise UserError(f"cannot write the download: {exc.strerror or exc}", tmp) from exc
                        got += len(chunk)
                        bar.update(len(chunk))
                if total is not None and got != total:
                    raise http.client.IncompleteRead(b"", total - got)
            return tmp
        except urllib.error.HTTPError as exc:
            exc.close()
            if not (exc.code >= 500 or exc.code in _TRANSIENT_HTTP):
                raise DownloadError(f"download failed: HTTP {exc.code} {exc.reason} (a client error, not "
                                    "retried); check the address or fetch the file by hand", url) from exc
            last = f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            last = _reason(exc)
            if isinstance(getattr(exc, "reason", exc), socket.gaierror):
                # the host name does not resolve (offline, or a wrong address): retrying will not help
                raise _Unreachable(f"cannot download from {urllib.parse.urlsplit(url).netloc} (its name does not "
                                   f"resolve, {last}; offline?)") from exc
        if tmp is not None:
            _remove(tmp)
            if tmp in temps:
                temps.remove(tmp)
    raise _Unreachable(f"cannot download from {urllib.parse.urlsplit(url).netloc} ({last}, "
                       f"{max(1, policy.attempts)} tries)")


class _Unreachable(Exception):
    """Every try to reach a host failed transiently (offline, refused, timeouts, 5xx)."""


def _member_matches(name: str, member: str) -> bool:
    return name == member or name.endswith("/" + member)


def _safe_parts(name: str, url: str) -> tuple[str, ...]:
    """Relative path parts of an archive member below its folder; refuses anything that could escape it."""
    parts = tuple(name.split("/"))
    if "\\" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise DownloadError(f"the archive holds an unsafe member name {name!r}; nothing was unpacked", url)
    return parts


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, url: str) -> None:
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise DownloadError(f"the archive holds a symbolic link {info.filename!r}; nothing was unpacked", url)
    with zf.open(info) as src, open(dest, "xb") as out:
        shutil.copyfileobj(src, out, _CHUNK)


def _unpack(spec: ModelSpec, archive: Path, folder: Path, temps: list[Path]) -> Path:
    """The model's file or folder taken out of a downloaded zip, as a temporary sibling of the target."""
    name = PurePosixPath(spec.target).name
    member = spec.member or ""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            hits = [i for i in infos if _member_matches(i.filename, member)]
            if len(hits) != 1:
                shown = ", ".join(i.filename for i in infos[:5]) or "nothing"
                raise DownloadError(f"expected exactly one member ending with {member} in the archive, found "
                                    f"{len(hits)} (it holds: {shown})", spec.url)
            if not spec.is_folder:
                dest = _temp_name(folder, name)
                temps.append(dest)
                _extract(zf, hits[0], dest, spec.url)
                return dest
            prefix = hits[0].filename[: len(hits[0].filename) - len(member)]
            chosen = [(i, _safe_parts(i.filename[len(prefix):], spec.url))
                      for i in infos if i.filename.startswith(prefix)]
            staging = _temp_name(folder, name)
            temps.append(staging)
            staging.mkdir()
            for info, parts in chosen:
                dest = staging.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                _extract(zf, info, dest, spec.url)
            return staging
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(f"the download is not a readable zip archive ({exc})", spec.url) from exc


def _install(spec: ModelSpec, root: Path, progress: bool, check: Check | None, policy: DownloadPolicy) -> Path:
    target = spec.path(root)
    folder = target.parent
    temps: list[Path] = []
    try:
        log.info("downloading %s (%s) from %s", spec.key, spec.description, spec.url)
        fetched = _fetch(spec.url, folder, target.name, progress, policy, temps)
        if spec.member is not None:
            candidate = _unpack(spec, fetched, folder, temps)
        else:
            candidate = _temp_name(folder, target.name)
            os.replace(fetched, candidate)
            temps.append(candidate)
        size, sha = _size(spec, candidate), _digest(spec, candidate)
        if spec.size is not None and size != spec.size:
            raise DownloadError(f"download has {size} bytes where the manifest expects {spec.size}; nothing was "
                                "saved", spec.url)
        if spec.sha256 is not None and sha != spec.sha256:
            raise DownloadError(f"download has sha256 {sha} where the manifest expects {spec.sha256}; nothing "
                                "was saved", spec.url)
        try:
            structural_check(spec, candidate)
            if check is not None:
                check(candidate)
        except (UserError, ValueError, OSError, RuntimeError) as exc:
            raise DownloadError(f"the downloaded {spec.key} model does not load ({exc}); nothing was saved",
                                spec.url) from exc
        os.replace(candidate, target)
        temps.remove(candidate)
    finally:
        for tmp in temps:
            _remove(tmp)
    if spec.sha256 is None:
        _record(root, spec, size, sha)
    log.info("%s saved to %s (sha256 %s)", spec.key, target, sha)
    return target


def _ensure(spec: ModelSpec, root: Path, download: bool, progress: bool, check: Check | None,
            policy: DownloadPolicy, dead_hosts: set[str]) -> Path:
    root = Path(root)
    st = weight_status(spec, root)
    if st.state in ("verified", "present"):
        return st.path
    if st.state == "corrupt":
        raise CorruptWeights(st.path, st.detail)
    if not download:
        raise MissingWeights([MissingEntry(spec, st.path, "downloading is turned off")])
    host = urllib.parse.urlsplit(spec.url).netloc
    if host in dead_hosts:
        raise MissingWeights([MissingEntry(spec, st.path, f"{host} was unreachable for an earlier model")])
    try:
        return _install(spec, root, progress, check, policy)
    except _Unreachable as exc:
        dead_hosts.add(host)
        raise MissingWeights([MissingEntry(spec, st.path, str(exc))]) from None


def ensure(spec: ModelSpec, root: Path, download: bool = True, progress: bool = True, *,
           check: Check | None = None, policy: DownloadPolicy | None = None) -> Path:
    """The local path of ``spec`` under ``root``, downloading it when absent.

    A present target is checked against the manifest's or the lock file's size/sha256 (CorruptWeights when it
    differs). A download goes to a temporary sibling, is verified, unpacked, checked with the structural check
    and then ``check(path)`` (which raises when the model does not load; the path ends with the target's name),
    and moved into place with os.replace. Temporaries are removed on any failure or Ctrl-C.
    Raises MissingWeights (offline / ``download=False``), DownloadError (4xx, bad checksum, does not load).
    """
    return _ensure(spec, Path(root), download, progress, check, policy or DownloadPolicy(), set())


def resolve_all(keys: Sequence[str], root: Path, download: bool = True, *, progress: bool = True,
                checks: Mapping[str, Check] | None = None, policy: DownloadPolicy | None = None,
                specs: Sequence[ModelSpec] | None = None) -> dict[str, Path]:
    """{key: local path} for every key; all fetch failures are gathered into one MissingWeights. A corrupt
    present file raises CorruptWeights at once."""
    catalog = {s.key: s for s in (default_models() if specs is None else specs)}
    unknown = [k for k in keys if k not in catalog]
    if unknown:
        raise ValueError(f"unknown model key(s) {unknown}; known: {sorted(catalog)}")
    policy = policy or DownloadPolicy()
    checks = checks or {}
    dead_hosts: set[str] = set()
    found: dict[str, Path] = {}
    missing: list[MissingEntry] = []
    for key in keys:
        spec = catalog[key]
        try:
            found[key] = _ensure(spec, Path(root), download, progress, checks.get(key), policy, dead_hosts)
        except MissingWeights as exc:
            missing.extend(exc.entries)
        except DownloadError as exc:
            missing.append(MissingEntry(spec, spec.path(Path(root)), str(exc)))
    if missing:
        raise MissingWeights(missing)
    return found


# ---------------------------------------------------------------------------------------------------------------
# python main.py weights


def weights_command(argv: Sequence[str] | None = None, *, specs: Sequence[ModelSpec] | None = None) -> int:
    """``python main.py weights [--checkpoints DIR] [--download]``: list every model as verified / present /
    missing / corrupt with its URL and target; --download fetches the missing ones.
    Exit 0 when every model is usable, 1 when some are missing or corrupt, 2 when a download failed."""
    parser = argparse.ArgumentParser(
        prog="python main.py weights",
        description="List the model weights allinone uses, where they go and whether they are there; "
                    "--download fetches the missing ones.")
    parser.add_argument("--checkpoints", default=None, metavar="DIR",
                        help=f"the checkpoints folder (default: ${ENV_VAR}, else checkpoints/ beside the package)")
    parser.add_argument("--download", action="store_true", help="download the missing models")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    catalog = tuple(default_models() if specs is None else specs)
    root = checkpoints_dir(args.checkpoints)
    failure: MissingWeights | None = None
    try:
        statuses = [weight_status(s, root) for s in catalog]
        wanted = [st.spec for st in statuses if st.state == "missing"]
        if args.download and wanted:
            try:
                resolve_all([s.key for s in wanted], root, progress=not args.quiet, specs=wanted)
            except MissingWeights as exc:
                failure = exc
            statuses = [weight_status(s, root) for s in catalog]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pad = " " * 20
    print(f"checkpoints folder: {root}")
    for st in statuses:
        print(f"{st.spec.key:<9} {st.state:<9} {st.path}{os.sep if st.spec.is_folder else ''}")
        print(f"{pad}{st.spec.description}")
        print(f"{pad}url: {st.spec.url}")
        print(f"{pad}licence: {st.spec.licence}")
        if st.detail:
            print(f"{pad}{st.detail}")
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 2
    if any(st.state in ("missing", "corrupt") for st in statuses):
        if not args.download and any(st.state == "missing" for st in statuses):
            print("run `python main.py weights --download` to fetch the missing models")
        return 1
    return 0
