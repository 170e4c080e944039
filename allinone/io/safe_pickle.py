"""Pickles read as data: OpenGait's dataset sequences, a run's silhouettes, an extract's resume.

A pickle can name any function for the reader to call (``os.system`` in a ``__reduce__``), so every pickle the
program reads goes through ``load_data_pickle``: it admits numpy arrays, numpy scalars and dtypes and plain
containers (list, tuple, dict, set, bytes, str, numbers), and refuses any other name the file asks for before it is
called. ``pickle_globals`` lists the names a pickle would call without calling them (to say why a checkpoint that
torch refused was refused).
"""
from __future__ import annotations

import functools
import io
import pickle
import pickletools
import zipfile
from pathlib import Path

from allinone.errors import UserError

_PROTOCOL_HEAD = 0x80  # PROTO opcode: a pickle of protocol 2 or later starts with it


class UnsafePickle(UserError):
    """A pickle that asks for something other than arrays and plain containers: refused, nothing of it ran."""


@functools.lru_cache(maxsize=1)
def _admitted() -> dict[tuple[str, str], object]:
    """(module, name) → the object, for the few names numpy's and Python's own pickles of plain data use; numpy 1
    wrote ``numpy.core``, numpy 2 writes ``numpy._core``: both map to this numpy's functions."""
    import collections

    import numpy as np

    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.float32(0).__reduce__()[0]
    out: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{core}.multiarray", "scalar")] = scalar
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    for name in ("set", "frozenset", "bytearray", "complex"):
        out[("builtins", name)] = getattr(__import__("builtins"), name)
    out[("collections", "OrderedDict")] = collections.OrderedDict
    out[("_codecs", "encode")] = __import__("codecs").encode  # protocol 2's form of bytes
    return out


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path) -> None:
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str):
        import _compat_pickle

        # Python 2's names (protocols 0-2), as pickle's own reader maps them; no Python 3 module bears them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = _admitted().get((module, name))
        if obj is None:
            raise UnsafePickle(f"refused: the pickle asks for {module}.{name}, not only numpy arrays and plain "
                               "containers (reading it could run code from the file)", self._path)
        return obj

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id (not plain data)")


def load_data_pickle(path: str | Path):
    """The object in the pickle at ``path``, when it holds only numpy arrays and plain containers. UnsafePickle
    (a UserError) otherwise, before anything it names is called; damaged bytes raise what pickle raises."""
    path = Path(path)
    with open(path, "rb") as fh:
        return _DataUnpickler(fh, path).load()


def pickle_globals(path: str | Path, limit: int = 50) -> list[str]:
    """The "module.name" globals the pickles in a file name, read without running anything: a torch zip's
    ``data.pkl`` or a file of pickles one after another (torch's legacy format). Empty when no pickle is found."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                data = b"".join(zf.read(n) for n in zf.namelist() if n.endswith(".pkl"))
        else:
            with open(path, "rb") as fh:
                data = fh.read(64 << 20)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return []
    found: list[str] = []
    stream = io.BytesIO(data)
    while len(found) < limit and stream.tell() < len(data) and data[stream.tell()] == _PROTOCOL_HEAD:
        try:
            found += _globals_of_one(stream)
        except Exception:  # a damaged or foreign stream: what was found so far is the answer
            break
    return found[:limit]


def _globals_of_one(stream: io.BytesIO) -> list[str]:
    """The globals of the one pickle at the stream's position (left after its STOP)."""
    names, strings, memo = [], [], {}
    top = None  # the string on top of the unpickler's stack, when it is one
    for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
            names.append(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            names.append(".".join(strings[-2:]) if len(strings) >= 2 else "an unnamed global")
        elif op.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            memo[len(memo) if arg is None else arg] = top
            continue
        elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(arg), str):
            strings.append(memo[arg])
            top = memo[arg]
            continue
        elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
            strings.append(arg)
            top = arg
            continue
        elif op.name == "STOP":
            break
        top = None
    return names
