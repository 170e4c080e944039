"""Reading the tensors of a torch zip checkpoint whose pickle also holds objects of someone else's scripts, without
running any of that pickle's code.

GaitGraph's released checkpoint pickles ``{'opt': argparse.Namespace, 'model': OrderedDict of tensors, 'optimizer',
'scheduler', ...}``, where the optimizer and scheduler hold functions of GaitGraph's training script; torch.load with
``weights_only=True`` refuses it, and full unpickling would import (and could run) whatever the file names. Here the
pickle is read by an Unpickler that resolves only the few globals that rebuild tensors (and OrderedDict); every
other global becomes :class:`Inert`, a stand-in that takes any arguments and state and does nothing, so a
``__reduce__`` naming ``os.system`` or ``builtins.exec`` builds an Inert instead of calling it.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

_STORAGES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> torch.Tensor:  # noqa: ARG001 - torch's _rebuild_tensor_v2 signature
    """A tensor viewing a flat storage tensor (torch._utils._rebuild_tensor_v2 without hooks or metadata)."""
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



class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self.zf, self.prefix = zf, prefix
        self.refused: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        self.refused.add(f"{module}.{name}")
        return Inert

    def persistent_load(self, pid: Any) -> torch.Tensor:
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
        up = _Unpickler(zf.read(pkl[0]), zf, prefix)
        try:
            obj = up.load()
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise ValueError(f"its pickle does not read ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not isinstance(obj, dict) or entry not in obj:
        raise ValueError(f"no {entry!r} entry")
    state = obj[entry]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"its {entry!r} entry is not a dict of tensors")
    return {str(k): v.clone() for k, v in state.items()}, up.refused
