"""The one exception type for a user's mistake: the CLI prints its message as one line and exits non-zero; and
which faults of the machine (disk full, permissions) or of a file (a damaged gallery) end the same way."""
from __future__ import annotations

import errno
import json
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (a file, a flag, a model). The message names the file and what is wrong."""

    exit_code = 2  # EXIT_USER_INPUT

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class EnvironmentFault(UserError):
    """A fault of the machine, not of the input (a full disk, no permission, a file held by another program): one
    line like a UserError, exit code 1 (EXIT_ENVIRONMENT)."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries often add pages of detail), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters at a word boundary, with "…" where something was cut."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def read_json(path: str | Path, what: str):
    """A JSON file the user gave, parsed; a UserError naming the file when it is missing, unreadable or not JSON."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found", p)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"not a readable {what} ({exc})", p) from None


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread where Ctrl-C raises KeyboardInterrupt: ``docker stop`` and
    systemd stop a command as Ctrl-C does, through the same ``except KeyboardInterrupt`` paths."""

    def __init__(self, signum: int) -> None:
        import signal
        self.signum = int(signum)
        super().__init__(signal.Signals(signum).name)


STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def interrupt_on_stop_signals() -> None:
    """Make SIGTERM and SIGHUP raise ``Interrupted`` in the main thread (call it there, once per process)."""
    import signal
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise_interrupted)


def reclaim_signals() -> None:
    """Give Python back the signals a native library took (Paddle installs C++ handlers that print a crash dump
    and kill the process on SIGTERM): each signal Python handles gets its Python handler again. Main thread
    only; elsewhere (a library loaded in a worker thread) nothing changes."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", *STOP_SIGNALS):
        sig = getattr(signal, name, None)
        handler = signal.getsignal(sig) if sig is not None else None
        if handler is not None:
            signal.signal(sig, handler)


def interrupted_exit(exc: BaseException) -> int:
    """The exit code of an interrupted command: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + getattr(exc, "signum", 2)


def interrupted_line(exc: BaseException, what: str) -> str:
    """``interrupted: what`` (Ctrl-C) or ``interrupted (SIGTERM): what``."""
    return f"interrupted ({exc}): {what}" if isinstance(exc, Interrupted) else f"interrupted: {what}"



def print_error(message: object) -> None:
    """The one way a command tells the user what went wrong: ``error: ...`` on stderr, one line."""
    import sys
    print(f"error: {message}", file=sys.stderr)


def reports_user_errors(command):
    """A command's UserError becomes its one line on stderr and its exit code (2 for the user's input, 1 for the
    machine): every command is wrapped in this, so no command prints its own errors."""
    import functools

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            print_error(exc)
            return exc.exit_code
    return wrapper

EXIT_USER_INPUT = 2  # the user's file, flag or model is wrong
EXIT_ENVIRONMENT = 1  # the machine: disk full, no permission, read-only file system, I/O error

# errno → what to tell the user. Anything else is a bug and keeps its traceback.
ENVIRONMENT_ERRNO = {
    errno.ENOSPC: "the disk is full (no space left on device): free some space and run again",
    errno.EDQUOT: "disk quota exceeded: free some space and run again",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error (a failing disk or a network file system that went away)",
    errno.EMFILE: "too many open files (raise ulimit -n)",
}


def _chain(exc: BaseException):
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def fault_line(exc: BaseException, database: str | None = None, kind: str = "gallery file",
               output: str | None = None) -> tuple[int, str] | None:
    """A fault of the environment or a damaged file, as (exit code, one line naming the path); None when ``exc``
    is neither (a bug: its traceback is kept). ``database`` names the SQLite file (a ``kind``: the gallery file, an
    embedding cache) an SQLite error is about; ``output`` the folder named when an OSError names no file."""
    import sqlite3
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNO:
            where = e.filename or output
            return EXIT_ENVIRONMENT, (f"{where}: " if where else "") + ENVIRONMENT_ERRNO[e.errno]
        if isinstance(e, sqlite3.DatabaseError):
            text = str(e).lower()
            where = f"{database}: " if database else f"the {kind}: "
            if "disk is full" in text or "disk i/o error" in text:
                return EXIT_ENVIRONMENT, where + f"the disk is full or failing ({first_line(e)}): the {kind} is " \
                                                 "as it was; free some space and run again"
            if "readonly" in text or "read-only" in text or "unable to open" in text:
                return EXIT_ENVIRONMENT, where + f"cannot be written ({first_line(e)})"
            if "malformed" in text or "not a database" in text or "corrupt" in text:
                advice = "run python main.py gallery check, or restore it from a backup" if kind == "gallery file" \
                    else "delete it (it is rebuilt)"
                return EXIT_USER_INPUT, where + f"the {kind} is damaged ({first_line(e)}): {advice}"
    return None
