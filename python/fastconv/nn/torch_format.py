"""Reading torch checkpoints (`.pth`, `.pt`) without torch.

torch.save writes a pickle whose tensors point into separately stored byte buffers
("storages"), in one of two layouts:

* the zip format (torch >= 1.6): a zip archive with `<name>/data.pkl` (the pickle),
  `<name>/data/<key>` (the raw bytes of each storage) and `<name>/byteorder`;
* the legacy format (before 1.6, or `_use_new_zipfile_serialization=False`): four pickles
  in a row (a magic number, the protocol version 1001, a dict describing the writer, the
  object itself), a pickled list of storage keys, then each storage as an int64 element
  count followed by its bytes, little-endian. The file starts with the bytes 80 02 8a 0a
  (pickle protocol 2, then the magic number as a LONG1).

A pickle can name any importable callable and have the reader call it, so an ordinary
unpickler runs whatever code the file asks for. This reader resolves only a fixed table of
names, each to a function of its own that builds a record, never to torch or to anything
else: the tensor rebuilders, torch's storage classes and dtypes, and
collections.OrderedDict. Any other name raises ValueError before anything is called, and
after loading only tensors (as NumPy arrays), dicts, lists, tuples, numbers, strings and
None are accepted.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from typing import IO, Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

__all__ = ["load_torch", "is_torch_file"]

PathLike = Union[str, "os.PathLike[str]"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001                  # torch.serialization.PROTOCOL_VERSION


class _Kind(NamedTuple):
    """An element type as torch stores it: torch's name and the NumPy type code of its
    bytes (bfloat16 is read as uint16 and widened to float32 afterwards). A tuple, so a
    hostile pickle cannot set attributes on the shared instances."""

    name: str
    code: str

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Native NumPy array of the stored values (bfloat16 -> float32, exactly)."""
        if self.name == "bfloat16":
            # bfloat16 is the upper half of a float32: shifting its bits up is exact.
            return (values.astype(np.uint32) << 16).view(np.float32)
        return values


_KINDS = {name: _Kind(name, code) for name, code in (
    ("float32", "f4"), ("float64", "f8"), ("float16", "f2"), ("bfloat16", "u2"),
    ("int64", "i8"), ("int32", "i4"), ("int16", "i2"), ("int8", "i1"), ("uint8", "u1"),
    ("uint16", "u2"), ("uint32", "u4"), ("uint64", "u8"), ("bool", "b1"),
    ("complex64", "c8"), ("complex128", "c16"))}

# torch.<X>Storage (typed storages, the element type of rebuild_tensor_v2) and
# torch.storage.UntypedStorage (bytes; rebuild_tensor_v3 names the dtype).
_STORAGE_KINDS = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
# torch dtypes as pickled (GLOBAL torch <name>), with their aliases.
_DTYPE_NAMES = dict({name: name for name in _KINDS}, float="float32", double="float64",
                    half="float16", long="int64", int="int32", short="int16")


class _Storage:
    """One storage of the file: its key, element type, element count and (legacy views)
    the element offset into its root storage; `data` (bytes) is filled in once the
    storage section has been read."""

    __slots__ = ("key", "kind", "numel", "offset", "data")

    def __init__(self, key: str, kind: _Kind, numel: int, offset: int = 0) -> None:
        self.key, self.kind, self.numel, self.offset = key, kind, numel, offset
        self.data: Optional[bytes] = None


class _TensorRef:
    """A tensor as the pickle describes it, before the storages are read: element type,
    storage, offset, size and stride in elements."""

    __slots__ = ("storage", "kind", "offset", "size", "stride")

    def __init__(self, storage: _Storage, kind: _Kind, offset: int, size: Tuple[int, ...],
                 stride: Tuple[int, ...]) -> None:
        self.storage, self.kind = storage, kind
        self.offset, self.size, self.stride = offset, size, stride


# ---------------------------------------------------------------- what the pickle may call


def _ints(what: str, value: Any) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ValueError(f"tensor {what} must be a tuple of nonnegative ints, got {value!r}")
    return tuple(value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any,
            kind: Optional[_Kind] = None) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise ValueError(f"a tensor must rest on a storage, got {type(storage).__name__}")
    (offset,) = _ints("storage offset", (offset,))
    size, stride = _ints("size", size), _ints("stride", stride)
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length")
    return _TensorRef(storage, storage.kind if kind is None else kind, offset, size, stride)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, dtype: Any,
                       metadata: Any = None) -> _TensorRef:
    if not isinstance(dtype, _Kind):
        raise ValueError(f"a tensor's dtype must be a torch dtype, got {dtype!r}")
    return _tensor(storage, offset, size, stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise ValueError(f"a parameter must wrap a tensor, got {type(data).__name__}")
    return data


def _ordered_dict(*args: Any) -> "collections.OrderedDict":
    return collections.OrderedDict(*args)


_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): _KINDS["uint8"],
}
_GLOBALS.update({("torch", name): _KINDS[kind] for name, kind in _STORAGE_KINDS.items()})
_GLOBALS.update({("torch", name): _KINDS[kind] for name, kind in _DTYPE_NAMES.items()})


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the names in _GLOBALS and hands persistent
    ids (storages) to `storage`."""

    def __init__(self, file: IO[bytes], storage: Callable[[Any], _Storage]) -> None:
        super().__init__(file)
        self._storage = storage

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise ValueError(
                f"the pickle asks for {module}.{name}, which is not part of a checkpoint of "
                f"tensors, dicts, lists and numbers: refusing to load it (unpickling may run "
                f"code; load files you trust with torch.load)") from None

    def persistent_load(self, pid: Any) -> _Storage:
        return self._storage(pid)


def _text(value: Any) -> Any:
    """Keys and tags written by Python 2 come as bytes."""
    return value.decode("ascii") if isinstance(value, bytes) else value


class _Storages:
    """The storages one file's pickle refers to, by key (each made once, so tensors that
    share a storage share its bytes)."""

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy
        self.by_key: Dict[str, _Storage] = {}
        self.views: List[_Storage] = []

    def __call__(self, pid: Any) -> _Storage:
        n = 6 if self.legacy else 5
        if not isinstance(pid, tuple) or len(pid) != n or _text(pid[0]) != "storage":
            raise ValueError(f"unexpected persistent id {pid!r} (only storages are read)")
        _, kind, key, _location, numel = pid[:5]
        key = _text(key)
        if not isinstance(kind, _Kind) or not isinstance(key, str) \
                or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"malformed storage record {pid!r}")
        storage = self.by_key.get(key)
        if storage is None:
            storage = self.by_key[key] = _Storage(key, kind, numel)
        elif storage.kind != kind:
            raise ValueError(f"storage {key!r} is read as both {storage.kind.name} and "
                             f"{kind.name}")
        view = pid[5] if self.legacy else None
        if view is None:
            return storage
        # Before torch 0.4 a storage could be a slice of another: (key, offset, size).
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[1], int)
                and isinstance(view[2], int) and view[1] >= 0 and view[2] >= 0):
            raise ValueError(f"malformed storage view {view!r}")
        sliced = _Storage(key, kind, view[2], view[1])
        self.views.append(sliced)
        return sliced

    def fill_views(self) -> None:
        for view in self.views:
            view.data = self.by_key[view.key].data


# ---------------------------------------------------------------- file layouts


def _unpickle(f: IO[bytes], storages: Optional[_Storages] = None) -> Any:
    def refuse(pid: Any) -> _Storage:
        raise ValueError(f"unexpected persistent id {pid!r} in a header pickle")

    return _Unpickler(f, refuse if storages is None else storages).load()


def _read_zip(path: PathLike) -> Tuple[Any, str]:
    """(the unpickled object with its storages' bytes filled in, the byte order)."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{str(path)!r} is a zip file but not a torch checkpoint "
                             f"(expected one data.pkl, found {len(pickles)})")
        prefix = pickles[0][:-len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        storages = _Storages(legacy=False)
        obj = _unpickle(io.BytesIO(zf.read(pickles[0])), storages)
        for storage in storages.by_key.values():
            name = f"{prefix}data/{storage.key}"
            if name not in names:
                raise ValueError(f"{str(path)!r} lacks the storage record {name!r}")
            storage.data = zf.read(name)
    return obj, order


def _read_legacy(path: PathLike) -> Tuple[Any, str]:
    """As _read_zip, for the legacy layout (always little-endian)."""
    with open(path, "rb") as f:
        if _unpickle(f) != LEGACY_MAGIC:
            raise ValueError(f"{str(path)!r} is neither a zip archive nor a legacy torch "
                             f"checkpoint (wrong magic number)")
        version = _unpickle(f)
        if version != LEGACY_PROTOCOL:
            raise ValueError(f"{str(path)!r}: unsupported legacy protocol {version!r}")
        _unpickle(f)  # the writer's sys_info; storages are little-endian regardless
        storages = _Storages(legacy=True)
        obj = _unpickle(f, storages)
        keys = _unpickle(f)
        if not isinstance(keys, list):
            raise ValueError(f"{str(path)!r}: malformed storage key list")
        remaining = os.fstat(f.fileno()).st_size - f.tell()
        for key in keys:
            storage = storages.by_key.get(_text(key))
            if storage is None:
                raise ValueError(f"{str(path)!r}: storage {key!r} is listed but unused")
            numel = int.from_bytes(f.read(8), "little", signed=True)
            nbytes = numel * np.dtype(storage.kind.code).itemsize
            if numel != storage.numel or not 0 <= nbytes <= remaining - 8:
                raise ValueError(f"{str(path)!r}: storage {key!r} holds {numel} elements, "
                                 f"expected {storage.numel} (truncated or corrupt file)")
            storage.data = f.read(nbytes)
            remaining -= 8 + nbytes
    storages.fill_views()
    return obj, "little"


# ---------------------------------------------------------------- tensors to arrays


def _array(ref: _TensorRef, order: str) -> np.ndarray:
    storage = ref.storage
    if storage.data is None:
        raise ValueError(f"storage {storage.key!r} has no data")
    dtype = np.dtype(ref.kind.code).newbyteorder("<" if order == "little" else ">")
    start = storage.offset * np.dtype(storage.kind.code).itemsize
    end = start + storage.numel * np.dtype(storage.kind.code).itemsize
    available = (min(end, len(storage.data)) - start) // dtype.itemsize
    if any(s == 0 for s in ref.size):
        return ref.kind.decode(np.empty(ref.size, dtype.newbyteorder("=")))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= available:
        # as_strided would read outside the buffer: refuse instead.
        raise ValueError(f"a tensor of size {ref.size}, stride {ref.stride} at offset "
                         f"{ref.offset} does not fit its storage of {available} elements")
    flat = np.frombuffer(storage.data, dtype=dtype, count=available, offset=start)
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.size, strides=[s * dtype.itemsize for s in ref.stride],
        writeable=False)
    # A C-contiguous, native-order copy that owns its memory (the file's buffer is freed).
    return ref.kind.decode(np.array(view, dtype=dtype.newbyteorder("="), order="C"))


def _resolve(obj: Any, order: str, active: set) -> Any:
    if isinstance(obj, _TensorRef):
        return _array(obj, order)
    if obj is None or isinstance(obj, (bool, int, float, complex, str)):
        return obj
    if type(obj) in (dict, collections.OrderedDict, list, tuple):
        if id(obj) in active:
            raise ValueError("the pickle holds a container that contains itself")
        active.add(id(obj))
        try:
            if isinstance(obj, dict):
                out: Any = type(obj)((_resolve(k, order, active), _resolve(v, order, active))
                                     for k, v in obj.items())
            else:
                out = type(obj)(_resolve(v, order, active) for v in obj)
        finally:
            active.discard(id(obj))
        return out
    what = "a bare storage" if isinstance(obj, _Storage) else type(obj).__name__
    raise ValueError(f"the checkpoint holds {what}; only tensors, dicts, lists, tuples, "
                     f"numbers and strings are read")


def is_torch_file(path: PathLike) -> bool:
    """Whether `path` looks like a torch checkpoint: a zip archive or a pickle starting
    with protocol 2 and torch's legacy magic number."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or head == b"\x80\x02\x8a\x0a"


def is_zip(file: Union[PathLike, IO[bytes]]) -> bool:
    """zipfile.is_zipfile, except that a damaged end record reads as "not a zip" instead of
    raising BadZipFile (CPython 3.11 lets some of those escape)."""
    try:
        return zipfile.is_zipfile(file)
    except zipfile.BadZipFile:
        return False


def load_torch(path: PathLike) -> Any:
    """Read a file written by torch.save, without torch, as NumPy: every tensor becomes a
    C-contiguous NumPy array of its dtype (bfloat16 as float32, exactly; tensors sharing a
    storage become separate arrays), dicts/OrderedDicts, lists, tuples, numbers, strings
    and None stay as they are. Both torch's zip format and the legacy (pre-1.6) format are
    read.

    A pickle that refers to anything else (a class, a function, a module object, a
    quantized or sparse tensor) raises ValueError without calling it; so does a damaged
    file."""
    if is_zip(path):
        reader = _read_zip
    elif is_torch_file(path):
        reader = _read_legacy
    else:
        raise ValueError(f"{str(path)!r} is not a torch checkpoint (neither a zip archive "
                         f"nor a legacy torch pickle)")
    try:
        obj, order = reader(path)
        if order not in ("little", "big"):
            raise ValueError(f"unknown byte order {order!r}")
        return _resolve(obj, order, set())
    except ValueError as e:
        raise ValueError(f"load_torch: {str(path)!r}: {e}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, RecursionError, zipfile.BadZipFile, UnicodeDecodeError,
            OverflowError, NotImplementedError, OSError, zlib.error, struct.error,
            RuntimeError) as e:  # RuntimeError: zipfile's "encrypted member"
        raise ValueError(f"load_torch: {str(path)!r} is damaged or not a torch checkpoint "
                         f"({type(e).__name__}: {e})") from None
