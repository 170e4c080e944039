"""Model weights: the manifest of default models, their state in the checkpoints folder, and verified installs
(the HTTP and unzip parts are download.py; the ``weights`` command is commands/weights.py). Over 400 lines
because the catalogue, the on-disk checks, the lock file and the install are one piece of state around ModelSpec:
each would import the others.

A model's *target* is a file or a folder under the checkpoints folder. Its expected size and sha256 come from the
manifest when the publisher gives them; otherwise the first download that verifies and loads records them in
``<checkpoints>/weights.lock.json`` and every later use is checked against that record. A present file that does
not match is reported and never used, and never deleted by us.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

from allinone.errors import UserError
from allinone.io.download import DownloadError, DownloadPolicy, Unreachable, fetch, remove_path, temp_name, unpack
from allinone.io.run_folder import sha256_file

log = logging.getLogger(__name__)

ENV_VAR = "ALLINONE_CHECKPOINTS"
LOCK_NAME = "weights.lock.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# torch.save's legacy (non-zip) format starts with a pickled magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

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


def optional_models() -> tuple[ModelSpec, ...]:
    """Models fetched only when a run needs them: the pose model, for keypoint gait models (GaitGraph).

    RTMPose-m: COCO AP 75.8 (RTMPose paper), where MoveNet Lightning is a smaller model made for one person near
    a webcam (small, far people are where gait keypoints fail); top-down from the tracker's boxes like HRNet
    (GaitGraph's training keypoints); Apache-2.0 code and weights; an ONNX export that runs in ONNX Runtime,
    batched, with no other framework (about 2 GFLOPs a crop, 256x192)."""
    return (
        ModelSpec(
            key="pose",
            target="rtmpose-m_simcc-body7_256x192.onnx",
            url="https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/"
                "rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504.zip",
            member="end2end.onnx",
            description="RTMPose-m (body7, 256x192, SimCC), top-down COCO-17 keypoints: the pose model of keypoint "
                        "gait models (GaitGraph), used only when one is chosen",
            licence="Apache-2.0 (MMPose). Trained on seven public pose datasets (COCO, AI Challenger, CrowdPose, "
                    "MPII, sub-JHMDB, Halpe, PoseTrack18): check their terms too",
        ),
    )


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
    return Path(__file__).resolve().parents[2] / "checkpoints"


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
        tmp.write_text(json.dumps(lock, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, lock_path)
    except OSError as exc:
        remove_path(tmp)
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


def _install(spec: ModelSpec, root: Path, progress: bool, check: Check | None, policy: DownloadPolicy) -> Path:
    target = spec.path(root)
    folder = target.parent
    temps: list[Path] = []
    try:
        log.info("downloading %s (%s) from %s", spec.key, spec.description, spec.url)
        fetched = fetch(spec.url, folder, target.name, progress, policy, temps)
        if spec.member is not None:
            candidate = unpack(spec, fetched, folder, temps)
        else:
            candidate = temp_name(folder, target.name)
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
            remove_path(tmp)
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
    except Unreachable as exc:
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
    catalog = {s.key: s for s in ((*default_models(), *optional_models()) if specs is None else specs)}
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
