"""Read a PyTorch state dict saved in torch's *legacy* (non-zip) format into numpy — without torch, and as data only.

The legacy format (torch.save with _use_new_zipfile_serialization=False, and every file before torch 1.6) is
pickles in a row:
    magic number (0x1950a86a20f9469cfc6c), protocol version (1001), sys_info (a dict: endianness, type sizes),
    the object — here an OrderedDict name -> tensor, each tensor pickled as
        torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks)
    whose storage is a persistent id ("storage", torch.FloatStorage, key, location, numel[, view]),
    the list of storage keys,
then, for each key in that order, an int64 element count and the storage's raw little-endian data.
A tensor is a strided view into its storage: the offset, size and **stride** given to _rebuild_tensor_v2 must be
honoured (many conv kernels are stored as non-contiguous views).

The unpickler resolves exactly four globals — collections.OrderedDict, torch._utils._rebuild_tensor_v2 and the
Float/Long storage types — to inert stand-ins; any other global (os.system, builtins.eval, …) is refused before
anything is called, so reading a weights file never runs code from it.
"""
from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path

import numpy as np

from dermo.errors import DermoError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "LongStorage": np.dtype("<i8")}


class TorchFileError(DermoError, ValueError):
    """A .pth file that is not a legacy torch state dict of plain tensors (one line, names the file)."""


class _Storage:
    def __init__(self, dtype: np.dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel


class _Tensor:
    """What _rebuild_tensor_v2 returns while unpickling: a recipe, materialised once the storages are read."""

    def __init__(self, storage, offset, size, stride, *_ignored):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("a tensor whose storage is not a storage")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialise(self, data: dict[str, np.ndarray]) -> np.ndarray:
        flat = data[self.storage.key]
        if not self.size:
            return flat[self.offset].copy()
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= len(flat) or min(self.stride) < 0:
            raise ValueError(f"a tensor view reaches outside its storage ({self.size}, stride {self.stride})")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=[s * item for s in self.stride], writeable=False)
        return np.array(view)            # a contiguous copy in the tensor's own (logical) layout


class _StorageType:
    def __init__(self, name: str):
        self.dtype = STORAGE_DTYPES[name]


_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
            **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES}}


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, stream):
        super().__init__(stream)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names the global {module}.{name}; a weights file may hold only "
                                         "tensors in an OrderedDict") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]}")
        _, kind, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return self.storages.setdefault(str(key), _Storage(kind.dtype, str(key), int(numel)))


def _load_plain(stream, what: str):
    """One pickle of plain values (numbers, strings, dicts, lists): no global at all is allowed."""
    class Plain(pickle.Unpickler):
        def find_class(self, module, name):
            raise pickle.UnpicklingError(f"its {what} names the global {module}.{name}")

    return Plain(stream).load()


def read_state_dict(path) -> dict[str, np.ndarray]:
    """{name: array} of a legacy-format torch state dict (float32 / int64 arrays in the tensors' own shapes).
    Raises TorchFileError (one line naming the file) for anything else, without running code from the file."""
    path = Path(path)
    try:
        stream = io.BytesIO(path.read_bytes())
        return _read(stream)
    except TorchFileError:
        raise
    except OSError as e:
        raise TorchFileError(f"{path}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, ValueError, EOFError, KeyError, TypeError, AttributeError, IndexError) as e:
        if isinstance(e, (KeyError, IndexError)) or not str(e):
            e = f"{type(e).__name__}"
        raise TorchFileError(f"{path}: not a torch legacy state dict of plain tensors: {e}") from None


def _read(stream) -> dict[str, np.ndarray]:
    if stream.read(2)[:1] == b"PK":
        raise ValueError("a zip-format torch file; save it with _use_new_zipfile_serialization=False")
    stream.seek(0)
    if _load_plain(stream, "header") != MAGIC_NUMBER:
        raise ValueError("no torch magic number")
    if _load_plain(stream, "header") != PROTOCOL_VERSION:
        raise ValueError("unknown torch protocol version")
    _load_plain(stream, "sys_info")
    unpickler = _DataOnlyUnpickler(stream)
    state = unpickler.load()
    if not isinstance(state, collections.OrderedDict) or not all(
            isinstance(k, str) and isinstance(v, _Tensor) for k, v in state.items()):
        raise ValueError("the object is not an OrderedDict of tensors")
    keys = _load_plain(stream, "storage list")
    data = {}
    for key in keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise ValueError(f"storage {key} is listed but no tensor uses it")
        numel = int(np.frombuffer(stream.read(8), "<i8")[0])
        raw = stream.read(numel * storage.dtype.itemsize)
        if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
            raise ValueError(f"storage {key} is truncated")
        data[str(key)] = np.frombuffer(raw, storage.dtype)
    missing = set(unpickler.storages) - set(data)
    if missing:
        raise ValueError(f"{len(missing)} storage(s) have no data")
    return {name: tensor.materialise(data) for name, tensor in state.items()}
