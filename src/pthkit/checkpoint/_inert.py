"""An unpickler that never imports or calls anything a file names.

Why hand-written: ``torch.load(weights_only=True)`` refuses a checkpoint as soon as it names one class it does not
know (``argparse.Namespace``, a custom ``nn.Module``, omegaconf …), and ``weights_only=False`` runs whatever the file
says. This unpickler sits in between: the pure-data rebuilders of :mod:`pthkit.checkpoint._policy` are re-implemented
here (tensor rebuild with bounds checks, NumPy arrays from raw bytes), and every other global becomes an
:class:`InertObject` subclass that only records its class path, arguments and state.

It subclasses the pure-Python :class:`pickle._Unpickler` so that ``BUILD``, ``REDUCE`` and ``NEWOBJ`` can be
restricted too (the C unpickler calls ``__setstate__`` of whatever is on the stack).
"""

from __future__ import annotations

import math
import pickle
import re
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from pthkit.checkpoint._policy import dtype_names, normalize_global, storage_dtypes
from pthkit.errors import BudgetExceededError, CorruptCheckpointError, UnsupportedFormatError

MAX_DEPTH = 200
MAX_DIMS = 64
_QUANTIZED = {torch.qint8, torch.qint32, torch.quint8, torch.quint4x2, torch.quint2x4}


class ByteSource(Protocol):
    """What the machine reads from: a binary file, ``io.BytesIO`` or a bounded view of a file."""

    def read(self, n: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...

    def tell(self) -> int: ...

    def seek(self, pos: int, whence: int = 0, /) -> int: ...


class StorageProvider(Protocol):
    """Gives the bytes of a storage record as a 1-D tensor of ``dtype`` with ``numel`` elements (sizes checked)."""

    def get(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor: ...


class InertObject:
    """Stand-in for an object of a class named by the file. Records arguments and state; runs nothing."""

    __pthkit_class__ = "?"
    _pk: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertObject":
        obj = object.__new__(cls)
        object.__setattr__(obj, "_pk", {"args": args, "kwargs": kwargs, "state": None, "items": [], "setitems": {}})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and not self._pk["args"]:
            self._pk["args"] = args

    def __setstate__(self, state: Any) -> None:
        self._pk["state"] = state

    def __call__(self, *args: Any, **kwargs: Any) -> "InertObject":
        # The class of "the result of calling X" is kept on X's class (so it lives exactly as long as the read) and
        # its name is bounded: calling a result again does not grow the name (no memory amplification).
        cls = type(self)
        called = cls.__dict__.get("_pk_called")
        if called is None:
            name = cls.__pthkit_class__
            called = _new_inert_class(name if name.endswith("()") else bounded_name(name + "()"))
            type.__setattr__(cls, "_pk_called", called)
        return called(*args, **kwargs)

    def append(self, item: Any) -> None:
        self._pk["items"].append(item)

    def extend(self, items: Any) -> None:
        self._pk["items"].extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._pk["setitems"][key] = value

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        return f"<inert {self.__pthkit_class__}>"

    @property
    def pthkit_class(self) -> str:
        return self.__pthkit_class__

    @property
    def pthkit_args(self) -> tuple:
        return self._pk["args"]

    @property
    def pthkit_state(self) -> Any:
        return self._pk["state"]

    @property
    def pthkit_items(self) -> list:
        return self._pk["items"]

    @property
    def pthkit_setitems(self) -> dict:
        return self._pk["setitems"]


MAX_OPS = 4_000_000  # opcodes per pickle: ~2 s of this pure-Python machine; real state dicts need far fewer
MAX_NAME = 1000  # longer global names are kept truncated (and classified dangerous by the policy)
MAX_CLASSES = 4096  # placeholder classes cached per read; more distinct names get uncached classes


def bounded_name(qualified: str) -> str:
    """``qualified`` itself, or its first :data:`MAX_NAME` characters and a note of the length (still > MAX_NAME)."""
    if len(qualified) <= MAX_NAME:
        return qualified
    return f"{qualified[:MAX_NAME]}…({len(qualified):,} characters)"


def _new_inert_class(qualified: str) -> type[InertObject]:
    return type("Inert", (InertObject,), {"__pthkit_class__": bounded_name(qualified)})


_FIXED_INERT: dict[str, type[InertObject]] = {}


def inert_class(qualified: str) -> type[InertObject]:
    """A placeholder class for one of pthkit's own fixed names (``numpy.generic`` …); names from files never land here.

    Placeholders for globals a file names are made per read by :class:`InertUnpickler` (bounded, dropped with it).
    """
    cls = _FIXED_INERT.get(qualified)
    if cls is None:
        cls = _new_inert_class(qualified)
        if len(_FIXED_INERT) < 64:
            _FIXED_INERT[qualified] = cls
    return cls


class _Marker:
    """A named value standing for a type the file refers to (``torch.Tensor``, a storage class …)."""

    def __init__(self, name: str, dtype: torch.dtype | None = None) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"<{self.name}>"


TENSOR_TYPE = _Marker("torch.Tensor")
PARAMETER_TYPE = _Marker("torch.nn.parameter.Parameter")
NDARRAY_TYPE = _Marker("numpy.ndarray")


class NumpyArrayBuilder:
    """``numpy.core.multiarray._reconstruct`` result: the array is built from raw bytes at ``BUILD`` time."""

    def __init__(self) -> None:
        self.array: Any = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CorruptCheckpointError("numpy array state: received a malformed state; expected 5 fields.")
        _version, shape, dtype, fortran, raw = state
        dtype = dtype.dtype if isinstance(dtype, NumpyDtypeBuilder) else dtype
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, (bytes, bytearray)):
            self.array = inert_class("numpy.ndarray[object]")()
            return
        shape = _int_tuple(shape, "numpy array shape")
        count = math.prod(shape)
        if count * dtype.itemsize != len(raw):
            raise CorruptCheckpointError.build(
                "numpy array", received=f"{len(raw)} bytes", expected=f"{count * dtype.itemsize} bytes for {shape} {dtype}",
                hint="The file is damaged.",
            )
        arr = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")
        self.array = arr.copy()


_DTYPE_SPEC = re.compile(r"^[<>|=]?[a-zA-Z]\d*$")


class NumpyDtypeBuilder:
    """``numpy.dtype(spec, align, copy)``: only simple specs such as ``"f8"``/``"i4"``, byte order from ``BUILD``."""

    def __init__(self, spec: Any, *_: Any) -> None:
        if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec) or spec.lstrip("<>|=")[:1] in ("O", "V"):
            self.dtype: Any = None
            return
        try:
            self.dtype = np.dtype(spec)
        except TypeError:
            self.dtype = None

    def __setstate__(self, state: Any) -> None:
        if self.dtype is not None and isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])
        if isinstance(state, tuple) and len(state) >= 5 and (state[3] is not None or state[4] is not None):
            self.dtype = None  # structured dtype: not rebuilt


def _numpy_scalar(dtype: Any, raw: Any = None) -> Any:
    dt = dtype.dtype if isinstance(dtype, NumpyDtypeBuilder) else dtype
    if not isinstance(dt, np.dtype) or dt.hasobject or not isinstance(raw, (bytes, bytearray)) or len(raw) != dt.itemsize:
        return inert_class("numpy.generic")(raw)
    return np.frombuffer(bytes(raw), dtype=dt)[0].item()


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise CorruptCheckpointError.build(what, received=_short(value), expected=f"a tuple of at most {MAX_DIMS} ints")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CorruptCheckpointError.build(what, received=_short(value), expected="non-negative integers")
        out.append(v)
    return tuple(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def make_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """``storage.as_strided(size, stride, offset)`` after checking it stays inside the storage (before any copy)."""
    if not isinstance(storage, torch.Tensor):
        raise CorruptCheckpointError.build(
            "tensor record", received=f"a tensor built on {type(storage).__name__}", expected="a storage record"
        )
    size_t = _int_tuple(size, "tensor size")
    stride_t = _int_tuple(stride, "tensor stride")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or len(size_t) != len(stride_t):
        raise CorruptCheckpointError.build(
            "tensor record", received=f"offset {offset!r}, size {size_t}, stride {stride_t}",
            expected="a non-negative offset and one stride per dimension",
        )
    if math.prod(size_t) == 0:
        return torch.empty(size_t, dtype=storage.dtype)
    last = offset + sum((s - 1) * st for s, st in zip(size_t, stride_t))
    if last >= storage.numel():
        raise CorruptCheckpointError.build(
            "tensor record",
            received=f"a tensor of size {list(size_t)} reaching element {last + 1}",
            expected=f"at most the {storage.numel()} elements its storage record holds",
            hint="The file is damaged or was crafted: the declared tensor size is larger than the stored data.",
        )
    return storage.as_strided(size_t, stride_t, storage.storage_offset() + offset)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(storage, torch.Tensor) or not isinstance(dtype, torch.dtype):
        raise CorruptCheckpointError("tensor record: received a malformed _rebuild_tensor_v3 call; expected a storage and a dtype.")
    if dtype != storage.dtype:
        if storage.dtype != torch.uint8 or storage.numel() % max(1, dtype.itemsize):
            raise CorruptCheckpointError("tensor record: received a storage whose size does not fit its dtype; expected whole elements.")
        storage = storage.view(dtype) if storage.numel() else torch.empty(0, dtype=dtype)
    return make_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise CorruptCheckpointError("parameter record: received a parameter without tensor data; expected a tensor.")
    return data


def _rebuild_meta(dtype, size, stride, requires_grad=False):
    if not isinstance(dtype, torch.dtype):
        raise CorruptCheckpointError("meta tensor record: received no dtype; expected a torch dtype.")
    return torch.empty_strided(_int_tuple(size, "tensor size"), _int_tuple(stride, "tensor stride"), dtype=dtype, device="meta")


def _rebuild_device_from_cpu(data, dtype, device=None, requires_grad=False):
    if not isinstance(data, torch.Tensor) or not isinstance(dtype, torch.dtype):
        raise CorruptCheckpointError("device tensor record: received malformed data; expected a tensor and a dtype.")
    return data.to(dtype)  # kept on the CPU


def _rebuild_device_from_numpy(data, dtype, device=None, requires_grad=False):
    array = data.array if isinstance(data, NumpyArrayBuilder) else data
    if not isinstance(array, np.ndarray) or not isinstance(dtype, torch.dtype):
        raise CorruptCheckpointError("device tensor record: received malformed data; expected an array and a dtype.")
    return torch.from_numpy(array).to(dtype)


def _not_rebuilt(kind: str) -> Callable[..., Any]:
    def refuse(*_: Any) -> Any:
        # Handled by torch.load(weights_only=True) instead (reader.py falls back on UnsupportedFormatError).
        raise UnsupportedFormatError(f"{kind} tensors: received a kind of tensor pthkit does not rebuild inertly; expected dense tensors.")

    return refuse


_LAYOUTS = {str(v): v for v in (torch.strided, torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)}


def _get_layout(name):
    if name not in _LAYOUTS:
        raise CorruptCheckpointError(f"layout: received {_short(name)}; expected a torch layout name.")
    return _LAYOUTS[name]


def _identity(value, *_):
    return value


def _size(*args):
    return _int_tuple(args[0] if args else (), "torch.Size")


def _device(*args):
    if not args or not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in args):
        raise CorruptCheckpointError("torch.device: received malformed arguments; expected a device name.")
    return torch.device(*args)


def _codecs_encode(text, encoding="utf-8", *_):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CorruptCheckpointError("_codecs.encode: received an unexpected call; expected latin-1 text.")
    return text.encode("latin1")


def _safe_builtin(kind: type) -> Callable[..., Any]:
    def build(*args: Any) -> Any:
        if kind in (bytes, bytearray) and args and not isinstance(args[0], (bytes, bytearray, str, list, tuple)):
            raise CorruptCheckpointError(f"builtins.{kind.__name__}: received {_short(args[0])}; expected data.")
        if kind in (bytes, bytearray) and args and isinstance(args[0], str):
            return kind(args[0], *(a for a in args[1:2] if a in ("latin1", "latin-1", "utf-8", "ascii")))
        if kind is int and args and isinstance(args[0], str) and len(args[0]) > 4300:
            raise CorruptCheckpointError("builtins.int: received a huge literal; expected a number.")
        return kind(*args)

    build.__name__ = f"safe_{kind.__name__}"
    return build


def _reconstructor(cls, base, state=None):
    if isinstance(cls, type) and issubclass(cls, InertObject):
        return cls()
    if cls is OrderedDict:
        return OrderedDict()
    return inert_class("copyreg._reconstructor()")(cls, base, state)


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _SAFE_FUNCTIONS:
        raise CorruptCheckpointError("tensor subclass record: received an unknown rebuild function; expected a torch rebuild helper.")
    return func(*args)


_SAFE_BUILTINS = {
    name: _safe_builtin(kind)
    for name, kind in {
        "set": set, "frozenset": frozenset, "bytearray": bytearray, "complex": complex, "slice": slice, "int": int,
        "float": float, "bool": bool, "str": str, "bytes": bytes, "tuple": tuple, "list": list, "dict": dict,
    }.items()
}

_FIXED: dict[str, Any] = {
    "collections.OrderedDict": OrderedDict,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta,
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": _rebuild_device_from_cpu,
    "torch._utils._rebuild_device_tensor_from_numpy": _rebuild_device_from_numpy,
    "torch._utils._rebuild_qtensor": _not_rebuilt("quantized"),
    "torch._utils._rebuild_sparse_tensor": _not_rebuilt("sparse"),
    "torch._utils._rebuild_nested_tensor": _not_rebuilt("nested"),
    "torch._utils._rebuild_wrapper_subclass": _not_rebuilt("subclass"),
    "torch.serialization._get_layout": _get_layout,
    "collections.Counter": Counter,
    "torch.Tensor": TENSOR_TYPE,
    "torch.nn.parameter.Parameter": PARAMETER_TYPE,
    "torch.Size": _size,
    "torch.device": _device,
    "torch.UntypedStorage": _Marker("torch.UntypedStorage", torch.uint8),
    "torch.storage.UntypedStorage": _Marker("torch.UntypedStorage", torch.uint8),
    "_codecs.encode": _codecs_encode,
    "torch.jit._pickle.build_intlist": _identity,
    "torch.jit._pickle.build_tensorlist": _identity,
    "torch.jit._pickle.build_doublelist": _identity,
    "torch.jit._pickle.build_boollist": _identity,
    "torch.jit._pickle.restore_type_tag": _identity,
    "numpy.core.multiarray._reconstruct": lambda cls, shape, typecode: NumpyArrayBuilder(),
    "numpy._core.multiarray._reconstruct": lambda cls, shape, typecode: NumpyArrayBuilder(),
    "numpy.ndarray": NDARRAY_TYPE,
    "numpy.dtype": NumpyDtypeBuilder,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "copyreg._reconstructor": _reconstructor,
    **{f"builtins.{k}": v for k, v in _SAFE_BUILTINS.items()},
}
_SAFE_FUNCTIONS = frozenset(v for v in _FIXED.values() if callable(v) and not isinstance(v, type)) | {
    _rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
}
_SAFE_NEWOBJ_TYPES = (OrderedDict, NumpyDtypeBuilder)
_NOT_REBUILT = frozenset(
    {
        "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_wrapper_subclass",
    }
)


class InertUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickle without importing or calling anything the file names (see the module docstring).

    ``storages`` resolves persistent ids; ``nested`` reads the bytes of ``torch.storage._load_from_bytes``.
    After :meth:`load`, ``globals_seen`` lists every global the stream named.
    """

    dispatch: dict[int, Callable[[Any], None]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined,misc]
    # set by pickle._Unpickler.load(); declared for the type checker
    stack: list[Any]
    metastack: list[Any]
    proto: int
    read: Callable[[int], bytes]
    readline: Callable[[], bytes]
    readinto: Any
    append: Callable[[Any], None]

    def __init__(
        self,
        file: ByteSource,
        storages: StorageProvider | None,
        *,
        nested: Callable[[bytes], Any] | None = None,
        scan: bool = False,
    ) -> None:
        super().__init__(file, encoding="latin1")
        self._storages = storages
        self._nested = nested
        self._scan = scan
        self._stream = file
        self._frame_end: int | None = None
        self._max_ops = MAX_OPS
        self._cache: dict[str, torch.Tensor] = {}
        self._classes: dict[str, type[InertObject]] = {}
        self._seen: set[str] = set()
        self.globals_seen: list[str] = []
        self.calls: set[str] = set()
        self.problems: list[tuple[str, str, str]] = []  # (kind, detail, severity): structural tricks seen
        self.notes: list[str] = []

    def _inert(self, qualified: str) -> type[InertObject]:
        cls = self._classes.get(qualified)
        if cls is None:
            cls = _new_inert_class(qualified)
            if len(self._classes) < MAX_CLASSES:
                self._classes[qualified] = cls
        return cls

    # -- the opcode loop: pickle._Unpickler.load with an opcode budget, reading the stream directly ----------------
    def load(self) -> Any:
        """Run the program to STOP. Frames are checked by :meth:`load_frame` and read through (as C does)."""
        stream = self._stream
        self.read = stream.read
        self.readline = stream.readline
        self.readinto = getattr(stream, "readinto", None)
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read = stream.read
        dispatch = self.dispatch
        budget = self._max_ops
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                dispatch[key[0]](self)
                budget -= 1
                if budget < 0:
                    raise BudgetExceededError.build(
                        "pickle", received=f"more than {self._max_ops:,} opcodes",
                        expected="a checkpoint (a large state dict needs a few hundred thousand)",
                        hint="The file was crafted to take minutes to read.",
                    )
        except pickle._Stop as stop:  # type: ignore[attr-defined]
            return stop.value

    # -- framing, as the C unpickler that torch.load uses does it ------------------------------------------------
    # CPython's C unpickler only checks that a FRAME's bytes are there, then reads on without enforcing the boundary
    # (an opcode may straddle it). The pure-Python one enforces it, so a straddling payload would stop this machine
    # where pickle.load runs it. Mirror C: check, rewind, read unframed; report every mismatch as a trick.
    def load_frame(self) -> None:
        (frame_size,) = struct.unpack("<Q", self.read(8))
        stream = self._stream
        here = stream.tell()
        if self._frame_end is not None and here - 9 != self._frame_end:
            self.problems.append(("frame", f"an opcode straddles a FRAME boundary at byte {self._frame_end}", "danger"))
        end = here + frame_size
        stream.seek(0, 2)
        available = stream.tell() - here
        stream.seek(here)
        if available < frame_size:
            self.problems.append(("frame", f"a FRAME declares {frame_size:,} bytes but only {available:,} follow", "danger"))
            end = here + available
        self._frame_end = end

    dispatch[pickle.FRAME[0]] = load_frame

    def frame_leftover(self) -> int:
        """After STOP: bytes of the last FRAME left unread (> 0), or bytes read past its end (< 0)."""
        if self._frame_end is None:
            return 0
        return self._frame_end - self._stream.tell()

    def load_stack_global(self) -> None:
        name = self.stack.pop()
        module = self.stack.pop()
        if type(name) is not str or type(module) is not str:
            self.problems.append(("stack-global", "a STACK_GLOBAL whose module or name is not a string", "danger"))
            raise pickle.UnpicklingError("STACK_GLOBAL requires str")
        self.append(self.find_class(module, name))

    dispatch[pickle.STACK_GLOBAL[0]] = load_stack_global

    # -- globals -------------------------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class docstring
        qualified = bounded_name(normalize_global(str(module), str(name)))
        if qualified not in self._seen:
            self._seen.add(qualified)
            self.globals_seen.append(qualified)
        if self._scan and qualified in _NOT_REBUILT:
            return self._inert(qualified)  # scan: record the call, keep walking
        fixed = _FIXED.get(qualified)
        if fixed is not None:
            return fixed
        if qualified == "torch.storage._load_from_bytes":
            return self._load_from_bytes
        mod, _, attr = qualified.rpartition(".")
        if mod == "torch" and attr.endswith("Storage") and attr in storage_dtypes():
            dtype = storage_dtypes()[attr]
            return _Marker(qualified, None if dtype in _QUANTIZED else dtype)  # type: ignore[arg-type]
        if mod == "torch" and attr in dtype_names():
            return dtype_names()[attr]
        return self._inert(qualified)

    def _load_from_bytes(self, data: Any) -> Any:
        if not isinstance(data, (bytes, bytearray)) or self._nested is None:
            raise CorruptCheckpointError("torch.storage._load_from_bytes: received no bytes; expected a nested torch.save archive.")
        return self._nested(bytes(data))

    # -- storages ------------------------------------------------------------------------------------------------
    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            return pid[1]  # legacy format: the class of a pickled nn.Module (an inert placeholder)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CorruptCheckpointError.build(
                "storage reference", received=_short(pid), expected="('storage', type, key, location, numel)"
            )
        _, kind, key, _location, numel = pid[:5]
        if self._scan and not (isinstance(kind, _Marker) and kind.dtype is not None):
            return self._inert("<storage of an unmodelled type>")()
        if not isinstance(kind, _Marker) or kind.dtype is None:
            raise UnsupportedFormatError.build(
                "storage reference", received=f"storage type {_short(kind)}", expected="a torch storage type",
                hint="Quantized and custom storages are not supported.",
            )
        if not isinstance(key, (str, int)) or isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise CorruptCheckpointError.build("storage reference", received=_short(pid), expected="a key and a size")
        if self._storages is None:
            raise CorruptCheckpointError("storage reference: received a storage in a plain pickle; expected none.")
        cache_key = f"{key}:{kind.dtype}"
        if cache_key not in self._cache:
            self._cache[cache_key] = self._storages.get(str(key), kind.dtype, numel)
        storage = self._cache[cache_key]
        if len(pid) == 6 and pid[5] is not None:  # legacy view: (view_key, offset, size)
            view = pid[5]
            if not (isinstance(view, tuple) and len(view) == 3):
                raise CorruptCheckpointError("storage view: received a malformed view; expected (key, offset, size).")
            _, off, size = view
            return make_tensor(storage, off, (size,), (1,))
        if storage.numel() < numel:
            raise CorruptCheckpointError("storage record: received fewer elements than declared.")
        return storage[:numel]

    # -- opcodes that would call or mutate arbitrary objects -------------------------------------------------------
    def _note_call(self, func: Any) -> None:
        if isinstance(func, InertObject) or (isinstance(func, type) and issubclass(func, InertObject)):
            self.calls.add(func.__pthkit_class__.removesuffix("()"))

    def _check_callable(self, func: Any) -> None:
        self._note_call(func)
        if func in _SAFE_FUNCTIONS or func is OrderedDict or func is Counter or func is NumpyDtypeBuilder or func == self._load_from_bytes:
            return
        if isinstance(func, InertObject) or (isinstance(func, type) and issubclass(func, InertObject)):
            return
        raise CorruptCheckpointError.build(
            "pickle", received=f"a call of {_short(func)}", expected="calls of data rebuilders only",
            hint="The file is malformed or crafted.",
        )

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        self._check_callable(func)
        if not isinstance(args, tuple):
            raise CorruptCheckpointError("pickle: received a REDUCE without an argument tuple; expected a tuple.")
        stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self._note_call(cls)
        if not (isinstance(cls, type) and (issubclass(cls, InertObject) or cls in _SAFE_NEWOBJ_TYPES)):
            raise CorruptCheckpointError.build(
                "pickle", received=f"NEWOBJ of {_short(cls)}", expected="a class named by the file"
            )
        self.append(cls.__new__(cls, *args) if cls is not NumpyDtypeBuilder else cls(*args))  # type: ignore[arg-type,type-var]

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._note_call(cls)
        if not (isinstance(cls, type) and issubclass(cls, InertObject)):
            raise CorruptCheckpointError.build(
                "pickle", received=f"NEWOBJ_EX of {_short(cls)}", expected="a class named by the file"
            )
        self.append(cls.__new__(cls, *args, **(kwargs if isinstance(kwargs, dict) else {})))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: Any) -> None:
        self._check_callable(klass)
        self.append(klass(*args))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, InertObject):
            self.calls.add(inst.__pthkit_class__.removesuffix("()"))  # BUILD calls __setstate__ / setattr
            inst.__setstate__(state)
        elif isinstance(inst, (NumpyArrayBuilder, NumpyDtypeBuilder)):
            inst.__setstate__(state)
        elif isinstance(inst, torch.Tensor):
            self.notes.append("tensor state in the file was ignored")
        elif isinstance(inst, OrderedDict) and isinstance(state, dict):
            pass  # e.g. state_dict's _metadata attribute: not needed
        else:
            self.notes.append(f"state for {type(inst).__name__} ignored")

    dispatch[pickle.BUILD[0]] = load_build


def unpickle(
    stream: ByteSource,
    storages: StorageProvider | None,
    *,
    nested: Callable[[bytes], Any] | None = None,
    scan: bool = False,
) -> tuple[Any, InertUnpickler]:
    """Unpickle one object inertly; every failure becomes :class:`CorruptCheckpointError`."""
    up = InertUnpickler(stream, storages, nested=nested, scan=scan)
    try:
        obj = up.load()
    except (CorruptCheckpointError, BudgetExceededError, UnsupportedFormatError):
        raise
    except RecursionError as err:
        raise BudgetExceededError("pickle: received nesting too deep to read; expected a checkpoint.") from err
    except MemoryError as err:
        raise BudgetExceededError("pickle: received data that would exhaust memory; expected a checkpoint.") from err
    except Exception as err:  # noqa: BLE001 - any failure inside a malformed pickle is a corrupt file
        raise CorruptCheckpointError.build(
            "pickle", received=f"malformed data ({type(err).__name__}: {_short(str(err))})",
            expected="a complete pickle", hint="The file is truncated or damaged.",
        ) from err
    return finalize(obj), up


def run_machine(
    stream: ByteSource, storages: StorageProvider | None, *, nested: Callable[[bytes], Any] | None = None
) -> tuple[Any, InertUnpickler, Exception | None]:
    """The scanner's entry: run the same machine as :func:`unpickle` (scan mode), never raising on bad data.

    Returns ``(object or None, unpickler, error or None)``: the unpickler's ``globals_seen`` / ``calls`` /
    ``problems`` hold what the stream did up to where it stopped.
    """
    up = InertUnpickler(stream, storages, nested=nested, scan=True)
    try:
        return up.load(), up, None
    except RecursionError:
        return None, up, BudgetExceededError("pickle: received nesting too deep to read; expected a checkpoint.")
    except MemoryError:
        return None, up, BudgetExceededError("pickle: received data that would exhaust memory; expected a checkpoint.")
    except Exception as err:  # noqa: BLE001 - whatever stops the machine is reported by the caller
        return None, up, err


MAX_NODES = 2_000_000  # containers walked when finalizing one read


def finalize(obj: Any, depth: int = 0, _seen: dict[int, Any] | None = None) -> Any:
    """Replace NumPy builders with arrays, everywhere (depth-limited, memoized by identity, node-budgeted)."""
    if depth > MAX_DEPTH:
        raise BudgetExceededError.build(
            "checkpoint structure", received=f"nesting deeper than {MAX_DEPTH} levels",
            expected="a checkpoint", hint="The file was crafted or is not a checkpoint.",
        )
    if isinstance(obj, (str, bytes, int, float, bool, type(None), torch.Tensor, torch.dtype, np.ndarray)):
        return obj
    seen = {} if _seen is None else _seen
    if id(obj) in seen:
        return seen[id(obj)]
    if len(seen) > MAX_NODES:
        raise BudgetExceededError.build(
            "checkpoint structure", received=f"more than {MAX_NODES:,} containers",
            expected="a checkpoint", hint="The file was crafted or is not a checkpoint.",
        )
    if isinstance(obj, NumpyArrayBuilder):
        seen[id(obj)] = obj.array
        return obj.array
    if isinstance(obj, NumpyDtypeBuilder):
        out: Any = obj.dtype if obj.dtype is not None else inert_class("numpy.dtype")()
        seen[id(obj)] = out
        return out
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        seen[id(obj)] = out
        for k, v in obj.items():
            out[finalize(k, depth + 1, seen)] = finalize(v, depth + 1, seen)
        return out
    if isinstance(obj, list):
        out = []
        seen[id(obj)] = out
        out.extend(finalize(v, depth + 1, seen) for v in obj)
        return out
    if isinstance(obj, tuple):
        seen[id(obj)] = obj  # provisional (a tuple cannot hold itself except through a list/dict, already memoized)
        out = tuple(finalize(v, depth + 1, seen) for v in obj)
        seen[id(obj)] = out
        return out
    if isinstance(obj, (set, frozenset)):
        seen[id(obj)] = obj
        return obj
    if isinstance(obj, InertObject):
        seen[id(obj)] = obj
        pk = obj._pk
        pk["args"] = finalize(pk["args"], depth + 1, seen)
        pk["state"] = finalize(pk["state"], depth + 1, seen)
        pk["items"] = finalize(pk["items"], depth + 1, seen)
        pk["setitems"] = finalize(pk["setitems"], depth + 1, seen)
        return obj
    return obj
