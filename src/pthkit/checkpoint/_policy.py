"""Which globals a weights file may name, and how bad each one is: one place for the scanner and the inert reader.

Three classes of global:

- **data** — rebuilders of pure data that pthkit re-implements or maps to harmless functions: torch tensor / parameter /
  storage rebuild helpers, dtypes, ``collections.OrderedDict``, a few builtins (``set``, ``complex`` …), and NumPy's
  array / scalar / dtype rebuilders. Decision on NumPy: ``numpy.core.multiarray._reconstruct`` + ``numpy.ndarray`` +
  ``numpy.dtype`` + ``numpy.core.multiarray.scalar`` only rebuild arrays from raw bytes (object arrays are refused),
  so they count as data and keep a file "safe"; ``torch.load(weights_only=True)`` still refuses them, which pthkit
  reports as an info finding.
- **dangerous** — anything that can run a command, evaluate code, import modules, touch files or the network.
- **unknown** — every other class (custom ``nn.Module`` subclasses, ``argparse.Namespace``, omegaconf,
  ``pathlib.PosixPath``, ``types.SimpleNamespace``, ``functools.partial`` …): reading
  them inertly is fine, but loading them with ``torch.load(weights_only=False)`` would run their code.
"""

from __future__ import annotations

import _compat_pickle
import re
from typing import Literal

GlobalClass = Literal["data", "unknown", "dangerous"]

# torch rebuild helpers that torch.load(weights_only=True) also accepts.
TORCH_DATA_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor",
        "torch._utils._rebuild_device_tensor_from_numpy",
        # accepted by torch.load(weights_only=True); pthkit hands files using them to it (see reader.py)
        "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_wrapper_subclass",
        "torch.serialization._get_layout",
        "torch.per_tensor_affine",
        "torch.per_tensor_symmetric",
        "torch.per_channel_affine",
        "torch.per_channel_symmetric",
        "torch.per_channel_affine_float_qparams",
        "collections.Counter",
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.Size",
        "torch.device",
        "torch.UntypedStorage",
        "torch.storage.UntypedStorage",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.slice",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.str",
        "builtins.bytes",
        "builtins.tuple",
        "builtins.list",
        "builtins.dict",
        "_codecs.encode",
        # TorchScript pickle helpers: each returns its argument.
        "torch.jit._pickle.build_intlist",
        "torch.jit._pickle.build_tensorlist",
        "torch.jit._pickle.build_doublelist",
        "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.restore_type_tag",
    }
)

# Data rebuilders pthkit reads inertly but torch.load(weights_only=True) refuses.
EXTRA_DATA_GLOBALS = frozenset(
    {
        "torch.storage._load_from_bytes",  # a nested torch.save zip; pthkit reads and scans it inertly
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "copyreg._reconstructor",
    }
)

DANGEROUS_MODULES = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "importlib", "runpy", "socket", "shutil",
        "pty", "webbrowser", "ctypes", "pickle", "_pickle", "marshal", "code", "codeop", "commands", "multiprocessing",
        "signal", "asyncio", "http", "urllib", "urllib2", "requests", "httplib", "ftplib", "telnetlib", "smtplib",
        "tempfile", "io", "_io", "pdb", "bdb", "timeit", "platform", "sysconfig", "distutils",
        "setuptools", "pip", "venv", "ensurepip", "zipimport", "pkgutil", "site", "operator",
        "threading", "_thread", "gc", "inspect", "cProfile", "profile", "trace", "dill", "cloudpickle", "joblib",
        "torch.hub", "torch.serialization", "torch.jit", "torch._C", "torch.ops", "torch.utils.cpp_extension",
        "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.load", "builtins.__import__", "zipfile",
        "tarfile", "glob", "fileinput", "ssl", "select", "selectors", "mmap", "resource", "fcntl", "termios",
        "nturl2path", "xmlrpc", "logging.config", "cgi", "imp", "yaml", "jinja2", "mako",
        # can call, import or fetch attributes: allowlist-first means these are never "just a class"
        "uuid", "pydoc", "functools", "copyreg", "copy_reg", "builtins", "__builtin__", "cffi",
        "idlelib", "lib2to3", "pkg_resources", "importlib_metadata", "importlib_resources", "doctest",
        "unittest", "contextlib", "atexit", "weakref", "_operator", "_functools", "codecs",
        "_posixsubprocess", "_winapi", "msvcrt", "winreg", "_ctypes", "pwd", "grp", "spwd",
        "shelve", "dbm", "sqlite3", "email", "mailbox", "imaplib", "poplib", "nntplib", "socketserver", "wsgiref",
        "xml", "html", "zipapp", "compileall", "py_compile", "dis", "tokenize", "ast", "symtable", "pickletools",
        "copy", "_sitebuiltins", "torch.distributed", "torch.multiprocessing", "torch.package",
        "torch.fx", "torch._dynamo", "torch._inductor", "torch.library",
        "torch.testing", "torch._ops", "torch.export", "torch.compiler", "torch.onnx", "numpy.ctypeslib",
        "numpy.lib.format", "pandas.io", "scipy.io", "IPython", "ipykernel", "jupyter_client", "fabric", "paramiko",
    }
)

# Name parts (split on ".", "_" and camelCase, lower-cased) that mean "calls, imports, or fetches attributes".
DANGEROUS_TOKENS = frozenset(
    {
        "getattr", "setattr", "delattr", "getattribute", "attrgetter", "itemgetter", "methodcaller", "locate",
        "import", "importer", "eval", "exec", "execfile", "compile", "system", "popen", "spawn", "subprocess",
        "shell", "command", "cmd", "call", "caller", "run", "runpath", "load", "loads", "unpickle", "partial",
        "partialmethod", "apply", "invoke", "fork", "getoutput", "getstatusoutput", "open", "urlopen",
        "urlretrieve", "socket", "connect", "remove", "unlink", "rmtree", "chmod", "chown", "kill", "pipe",
        "pipepager", "pager", "globals", "locals", "vars", "builtins", "breakpoint", "settrace", "environ",
        "putenv", "reload", "subclasses", "mro", "closure", "write",
    }
)
_TOKEN_PREFIXES = ("exec", "spawn", "popen", "getattr", "setattr", "import", "system", "eval")

# Single functions in otherwise harmless modules that load (and so run) other pickles or code.
DANGEROUS_NAMES = frozenset(
    {
        "torch.load", "torch.jit.load", "torch.hub.load", "torch.package.PackageImporter", "torch.from_file",
        "numpy.load", "numpy.fromfile", "numpy.lib.npyio.load", "torch.classes", "torch._ops.ops", "torch.ops",
        "types.FunctionType", "types.LambdaType", "types.CodeType", "types.MethodType", "types.ModuleType",
        "types.BuiltinFunctionType", "types.new_class", "types.prepare_class", "types.coroutine",
        "types.BuiltinMethodType", "types.MethodWrapperType", "types.WrapperDescriptorType", "types.FrameType",
        "types.TracebackType", "types.GeneratorType", "types.CellType", "functools.reduce", "pathlib.Path.write_text", "pathlib.Path.write_bytes",
    }
)

DANGEROUS_BUILTINS = frozenset(
    {
        "eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__", "open", "globals", "locals", "vars",
        "input", "breakpoint", "exit", "quit", "help", "memoryview", "type", "object", "super", "classmethod",
        "staticmethod", "property", "apply", "execfile", "reload", "file", "print", "dir", "id", "hasattr", "callable",
        "map", "filter", "iter", "next", "reversed", "sorted", "__build_class__",
    }
)


def normalize_global(module: str, name: str) -> str:
    """``"module.name"`` with Python 2 names mapped as the standard unpickler would (``__builtin__`` → ``builtins``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def split_global(qualified: str) -> tuple[str, str]:
    module, _, name = qualified.rpartition(".")
    return module, name


def _is_torch_dtype_or_storage(qualified: str) -> bool:

    module, name = split_global(qualified)
    if module != "torch":
        return False
    if name.endswith("Storage"):
        return name in storage_dtypes()
    return name in dtype_names()


def dtype_names() -> dict[str, "object"]:
    """``{"float32": torch.float32, …}`` for every dtype attribute of ``torch`` (computed once, from torch itself)."""
    global _DTYPES
    if _DTYPES is None:
        import torch

        _DTYPES = {n: getattr(torch, n) for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)}
    return _DTYPES


def storage_dtypes() -> dict[str, "object"]:
    """``{"FloatStorage": torch.float32, …}`` from torch's own legacy storage table."""
    global _STORAGES
    if _STORAGES is None:
        import torch

        _STORAGES = {name: dtype for dtype, name in torch.storage._dtype_to_storage_type_map().items()}
    return _STORAGES


_DTYPES: dict | None = None
_STORAGES: dict | None = None


# Harmless types that appear in ordinary pickles (protocol 0/1 use ``copyreg._reconstructor(cls, object, None)``).
_HARMLESS = frozenset({"builtins.object", "__builtin__.object"})
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def name_tokens(qualified: str) -> set[str]:
    """Lower-cased words of a dotted name: ``uuid._get_command_stdout`` -> {uuid, get, command, stdout}."""
    out: set[str] = set()
    for part in re.split(r"[._\s]+", qualified):
        if not part:
            continue
        out.add(part.lower())
        out.update(w.lower() for w in _CAMEL.findall(part))
    return out


def classify(qualified: str) -> GlobalClass:
    """Put one ``"module.name"`` global in its class (see the module docstring).

    Allowlist first: only the data rebuilders are "data"; everything else is at best "unknown" (needs trust), and a
    global that can call, import or fetch attributes (by module, by name, or by an attribute path) is "dangerous".
    """
    if qualified in TORCH_DATA_GLOBALS or qualified in EXTRA_DATA_GLOBALS or _is_torch_dtype_or_storage(qualified):
        return "data"
    if qualified in _HARMLESS:
        return "unknown"
    module, name = split_global(qualified)
    if not module or not name or len(qualified) > 1024:
        return "dangerous"  # not a plain "module.name": crafted
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        if ".".join(parts[:i]) in DANGEROUS_MODULES:
            return "dangerous"
    if qualified in DANGEROUS_MODULES or qualified in DANGEROUS_NAMES:
        return "dangerous"
    if any(p.startswith("__") and p.endswith("__") for p in qualified.split(".")[1:]):
        return "dangerous"  # dunder attribute paths (``object.__subclasses__`` …) fetch attributes
    tokens = name_tokens(name)
    if tokens & DANGEROUS_TOKENS or any(t.startswith(_TOKEN_PREFIXES) for t in tokens):
        return "dangerous"
    return "unknown"


def torch_weights_only_accepts(qualified: str) -> bool:
    """Whether ``torch.load(weights_only=True)`` accepts this global (so pthkit may hand the file to torch)."""
    return qualified in TORCH_DATA_GLOBALS or _is_torch_dtype_or_storage(qualified)
