"""Pickles read without running them: OpenGait's dataset sequences, a run's silhouettes, an extract's resume, and
the tensors of a checkpoint that also pickles someone else's objects.

A pickle can name any function for the reader to call (``os.system`` in a ``__reduce__``), so every pickle the
program reads goes through ``load_data_pickle``: it admits numpy arrays, numpy scalars and dtypes and plain
containers (list, tuple, dict, set, bytes, str, numbers), and refuses any other name the file asks for before it is
called. ``pickle_globals`` lists the names a pickle would call without calling them (to say why a checkpoint that
torch refused was refused).

``read_tensors`` reads the tensors of a torch zip checkpoint whose pickle also holds objects of another project's
scripts: GaitGraph's released checkpoint pickles ``{'opt': argparse.Namespace, 'model': OrderedDict of tensors,
'optimizer', 'scheduler', ...}``, whose optimizer and scheduler hold functions of its training script; torch.load
with ``weights_only=True`` refuses it, and full unpickling would import (and could run) whatever the file names.
Its unpickler resolves only the globals that rebuild tensors (and OrderedDict); every other global becomes
:class:`Inert`, a stand-in that takes any arguments and state and does nothing, so a ``__reduce__`` naming
``os.system`` builds an Inert instead of calling it. torch is imported on use only.
"""
from __future__ import annotations

import collections
import functools
import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from allinone.errors import UserError

if TYPE_CHECKING:
    import torch

_PROTOCOL_HEAD = 0x80  # PROTO opcode: a pickle of protocol 2 or later starts with it


class UnsafePickle(UserError):
    """A pickle that asks for something other than arrays and plain containers: refused, nothing of it ran."""


@functools.lru_cache(maxsize=1)
def _admitted() -> dict[tuple[str, str], object]:
    """(module, name) → the object, for the few names numpy's and Python's own pickles of plain data use; numpy 1
    wrote ``numpy.core``, numpy 2 writes ``numpy._core``: both map to this numpy's functions."""
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


@functools.lru_cache(maxsize=1)
def _storage_dtypes() -> dict:
    """torch's legacy storage class names (what a zip checkpoint's pickle names) → their dtypes."""
    import torch
    return {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
            "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
            "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
            "BoolStorage": torch.bool}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> torch.Tensor:  # noqa: ARG001 - torch's _rebuild_tensor_v2 signature
    """A tensor viewing a flat storage tensor (torch._utils._rebuild_tensor_v2 without hooks or metadata)."""
    import torch
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad=False, hooks=None) -> torch.Tensor:  # noqa: ARG001
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class Inert:
    """What every other global of the pickle becomes: it accepts any call, state, items and appends, and keeps
    nothing (so no code named by the file runs, and nothing it built is used)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __new__(cls, *args: Any, **kwargs: Any) -> "Inert":  # NEWOBJ passes the pickled args to __new__
        return super().__new__(cls)

    def __call__(self, *args: Any, **kwargs: Any) -> "Inert":
        return Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass



class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.zf, self.prefix = zf, prefix
        self.refused: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _storage_dtypes():
            return _storage_dtypes()[name]
        self.refused.add(f"{module}.{name}")
        return Inert

    def persistent_load(self, pid: Any) -> torch.Tensor:
        import torch
        # ('storage', storage type (resolved by find_class to a dtype), key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        dtype, key = pid[1], str(pid[2])
        raw = self.zf.read(f"{self.prefix}data/{key}")
        return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.zeros(0, dtype=dtype)


def read_tensors(path: str | Path, entry: str = "model") -> tuple[dict[str, torch.Tensor], set[str]]:
    """The ``entry`` dict of a torch zip checkpoint, read without running code from the file, and the names of the
    globals that were not resolved (turned into Inert). ValueError when the file is not a torch zip checkpoint or
    ``entry`` is not a dict of tensors."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"not a torch zip checkpoint ({exc})") from exc
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError("not a torch zip checkpoint (no single data.pkl)")
        prefix = pkl[0][:-len("data.pkl")]
        up = _TensorUnpickler(zf.read(pkl[0]), zf, prefix)
        try:
            obj = up.load()
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise ValueError(f"its pickle does not read ({type(exc).__name__}: {str(exc)[:120]})") from exc
    import torch
    if not isinstance(obj, dict) or entry not in obj:
        raise ValueError(f"no {entry!r} entry")
    state = obj[entry]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"its {entry!r} entry is not a dict of tensors")
    return {str(k): v.clone() for k, v in state.items()}, up.refused
