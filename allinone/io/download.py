"""Downloading one model file: HTTP with retries into a temporary sibling, and safe unpacking of zip archives.
Nothing is created before the server answers; temporaries are listed so the caller removes them on failure."""
from __future__ import annotations

import http.client
import logging
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from allinone import __version__
from allinone.errors import UserError


class Archived(Protocol):
    """What unpacking needs to know of a model (weights.ModelSpec has it)."""

    target: str
    member: str | None
    url: str
    is_folder: bool

log = logging.getLogger(__name__)

_TRANSIENT_HTTP = frozenset({408, 425, 429})  # plus every 5xx


_CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadPolicy:
    # Tries per file for transient failures (timeouts, resets, refused connections, 5xx). More tries ride out a
    # flaky link but make an offline run wait longer before it says what to download by hand.
    attempts: int = 4
    # Wait before the second try, doubled for each further one (1 s, 2 s, 4 s).
    backoff_s: float = 1.0
    # Socket timeout for connecting and for each read; a stalled transfer counts as a transient failure.
    timeout_s: float = 60.0


class DownloadError(UserError):
    """A download reached the server but failed for good (4xx, wrong checksum, bad archive, does not load)."""


def remove_path(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove temporary %s: %s", path, exc)


def temp_name(folder: Path, name: str, suffix: str = "") -> Path:
    """A sibling temporary name that keeps the target's name (and suffix) at its end, so loaders that dispatch
    on the suffix accept it."""
    return folder / f".tmp-{uuid.uuid4().hex[:8]}-{name}{suffix}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fetch(url: str, folder: Path, name: str, progress: bool, policy: DownloadPolicy,
           temps: list[Path]) -> Path:
    """Download ``url`` into a temporary file in ``folder``; retries transient failures. Raises DownloadError
    for a final HTTP error, Unreachable when every try failed transiently. Nothing is created before the
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
                tmp = temp_name(folder, name, ".download")
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
                raise Unreachable(f"cannot download from {urllib.parse.urlsplit(url).netloc} (its name does not "
                                   f"resolve, {last}; offline?)") from exc
        if tmp is not None:
            remove_path(tmp)
            if tmp in temps:
                temps.remove(tmp)
    raise Unreachable(f"cannot download from {urllib.parse.urlsplit(url).netloc} ({last}, "
                       f"{max(1, policy.attempts)} tries)")


class Unreachable(Exception):
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


def unpack(spec: Archived, archive: Path, folder: Path, temps: list[Path]) -> Path:
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
                dest = temp_name(folder, name)
                temps.append(dest)
                _extract(zf, hits[0], dest, spec.url)
                return dest
            prefix = hits[0].filename[: len(hits[0].filename) - len(member)]
            chosen = [(i, _safe_parts(i.filename[len(prefix):], spec.url))
                      for i in infos if i.filename.startswith(prefix)]
            staging = temp_name(folder, name)
            temps.append(staging)
            staging.mkdir()
            for info, parts in chosen:
                dest = staging.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                _extract(zf, info, dest, spec.url)
            return staging
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DownloadError(f"the download is not a readable zip archive ({exc})", spec.url) from exc
