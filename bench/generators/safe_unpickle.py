"""A restricted unpickler for NVIDIA StyleGAN2-ADA ``.pkl`` snapshots: data only, no code from the file runs.

An NVIDIA snapshot is a plain pickle of a dict (``G``, ``D``, ``G_ema``, ``augment_pipe``,
``training_set_kwargs``) whose networks are ``torch_utils.persistence`` objects: each one is rebuilt by
``_reconstruct_persistent_obj(meta)``, where ``meta`` carries the source code of the network module, the
class name and the object's ``__dict__``. The official loader runs ``exec`` on that source. This reader never
does: it admits only the globals listed in :data:`ALLOWED` and turns each persistent object into a
:class:`PersistentObject` (class name + state dict, the source kept only as a hash). Tensors are rebuilt
from their storages with ``torch.load(weights_only=True)``; any other global (``os.system``,
``builtins.eval``, ``subprocess``...) makes the load fail with a message naming the file and the global.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


class UnsafePickleError(ValueError):
    """The pickle refers to a global this reader does not admit, or is malformed."""


class EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict``: a dict whose items are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


@dataclass
class PersistentObject:
    """What a ``torch_utils.persistence`` object holds, without its class: name, state and source hash.

    Attributes:
        class_name: the class name in the pickled module (``Generator``, ``SynthesisLayer``...).
        state: the object's ``__dict__`` (for an ``nn.Module``: ``_parameters``, ``_buffers``, ``_modules``,
            ``_init_kwargs`` and plain attributes).
        source_sha: SHA-256 of the embedded module source (never executed), to tell code versions apart.
    """

    class_name: str
    state: dict = field(default_factory=dict)
    source_sha: str = ""


def _reconstruct_persistent(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickleError("a torch_utils.persistence record is not a class record")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsafePickleError(f"the persistent {meta['class_name']} has a non-dict state")
    src = meta.get("module_src", "")
    sha = hashlib.sha256(src.encode() if isinstance(src, str) else b"").hexdigest()
    return PersistentObject(meta["class_name"], dict(state), sha)


def _load_storage(data: bytes) -> Any:
    """A storage that ``torch.storage._load_from_bytes`` would rebuild, read with ``weights_only=True``."""
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError("a tensor storage record does not hold bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage: Any, offset: int, size: tuple, stride: tuple, *_: Any) -> torch.Tensor:
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple) -> torch.Tensor:
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    """A parameter comes back as its plain tensor (the loaders copy values, never modules)."""
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("a parameter record does not hold a tensor")
    return data


def _rebuild_from_type_v2(func: Callable, new_type: Any, args: tuple, state: Any) -> torch.Tensor:
    if func not in _REBUILDERS or new_type not in (torch.Tensor, torch.nn.Parameter):
        raise UnsafePickleError(f"tensor rebuild through {func!r} as {new_type!r} is not admitted")
    return func(*args)


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} is not admitted")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if isinstance(data, bytes) else dtype.type(data)


def _numpy_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise UnsafePickleError(f"numpy array of class {cls!r} is not admitted")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """Protocol 2 writes ``bytes`` as ``_codecs.encode(text, 'latin1')``; nothing else is admitted."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with {type(text).__name__}, {encoding!r} is not admitted")
    return text.encode("latin1")


_REBUILDERS = (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter)
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_TORCH_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")

ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "frozenset"): frozenset,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._utils", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(mod, "scalar"): _numpy_scalar for mod in _NUMPY_CORE},
    **{(mod, "_reconstruct"): _numpy_reconstruct for mod in _NUMPY_CORE},
    **{("torch", name): getattr(torch, name) for name in _TORCH_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only :data:`ALLOWED` and no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        """Return the admitted stand-in for ``module.name`` or raise :class:`UnsafePickleError`."""
        module = "builtins" if module == "__builtin__" else module  # protocol 0-2 pickles name Python 2's module
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refers to {module}.{name}, which is not admitted (loading it could run "
                                    "code from the file)") from None

    def persistent_load(self, pid: Any) -> Any:
        """NVIDIA snapshots have no persistent ids; a file that uses them is not one."""
        raise UnsafePickleError(f"uses persistent id {str(pid)[:40]!r}, which an NVIDIA snapshot never does")


def safe_load(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: naming the file and the refused global or the malformed record.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: NVIDIA .pkl {err}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, ValueError) as err:
        raise UnsafePickleError(f"{path}: not a readable NVIDIA .pkl snapshot ({type(err).__name__}: {err})") from err


def module_tensors(obj: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a persistent ``nn.Module``: parameters and buffers of it and its submodules."""
    out: dict[str, torch.Tensor] = {}
    for slot in ("_parameters", "_buffers"):
        for name, value in (obj.state.get(slot) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
    for name, child in (obj.state.get("_modules") or {}).items():
        if isinstance(child, PersistentObject):
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def submodules(obj: PersistentObject, prefix: str = "") -> dict[str, PersistentObject]:
    """Every persistent submodule of ``obj`` by dotted name (``obj`` itself under ``""``)."""
    out = {prefix.rstrip("."): obj}
    for name, child in (obj.state.get("_modules") or {}).items():
        if isinstance(child, PersistentObject):
            out.update(submodules(child, f"{prefix}{name}."))
    return out
