"""The signature index of every registered architecture, cached on disk per library versions.

``~/.cache/pthkit/signatures-<versions hash>.json.gz`` (``PTHKIT_CACHE_DIR`` overrides the folder). JSON, not pickle:
a cache file must never be able to run code. The first build uses a process pool and shows a rich progress bar;
architectures registered later (user code, entry points) are added to the index without rebuilding it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from pthkit.architectures.registry import REGISTRY
from pthkit.architectures.signatures import NBT, Signature, compute_signature

__all__ = ["SignatureIndex", "cache_dir", "cache_path", "library_versions", "get_index", "build_index"]

SCHEMA = 1
CACHED_SOURCES = ("timm", "torchvision")


def library_versions() -> dict[str, str]:
    """The versions the cache is keyed by: a new torch/timm/torchvision/pthkit means new signatures."""
    import timm
    import torch
    import torchvision

    import pthkit

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "pthkit": pthkit.__version__, "schema": str(SCHEMA)}


def cache_dir() -> Path:
    env = os.environ.get("PTHKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pthkit"


def cache_path(versions: dict[str, str] | None = None) -> Path:
    versions = versions or library_versions()
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"signatures-{digest}.json.gz"


def _body_key(sig: Signature) -> str:
    """Hash of the signature without its head and BN counters: archs sharing it differ only in num_classes."""
    head = set(sig.head)
    parts = [f"{k}={s}" for k, s in zip(sig.keys, sig.shapes) if k not in head and not k.endswith(NBT)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


class LazySignatures(MutableMapping):
    """Name -> :class:`Signature`, decoded from its cached JSON text on first access.

    Identification reads the pre-filter data of every architecture but the full signature of only a dozen, so the
    cache stores each signature as its own JSON string and decodes it when asked (loading is ~10x faster).
    """

    def __init__(self, raw: dict[str, Any] | None = None) -> None:
        self._raw: dict[str, Any] = dict(raw or {})
        self._done: dict[str, Signature] = {}

    def __getitem__(self, name: str) -> Signature:
        sig = self._done.get(name)
        if sig is None:
            raw = self._raw.pop(name)  # KeyError for unknown names
            sig = Signature.from_json(name, json.loads(raw) if isinstance(raw, str) else raw)
            self._done[name] = sig
        return sig

    def __setitem__(self, name: str, sig: Signature) -> None:
        self._raw.pop(name, None)
        self._done[name] = sig

    def __delitem__(self, name: str) -> None:
        if self._raw.pop(name, None) is None:
            del self._done[name]

    def __contains__(self, name: object) -> bool:
        return name in self._done or name in self._raw

    def __iter__(self):
        yield from list(self._done)
        yield from list(self._raw)

    def __len__(self) -> int:
        return len(self._done) + len(self._raw)

    def text(self, name: str) -> str:
        """The JSON text of one signature (without decoding it when it was never used)."""
        raw = self._raw.get(name)
        if isinstance(raw, str):
            return raw
        return json.dumps(raw if raw is not None else self._done[name].to_json(), separators=(",", ":"))


@dataclass
class SignatureIndex:
    """Signatures by qualified name, failures by name, and the fast pre-filter structures.

    Cached file layout (gzip JSON): ``versions``, ``failures``, ``build_seconds``, ``prefilter`` (per name: shape
    multiset ``c`` and head-less signature hash ``b``) and ``signatures`` (per name: the signature's JSON text).
    """

    signatures: MutableMapping[str, Signature] = field(default_factory=LazySignatures)
    failures: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    build_seconds: float = 0.0
    path: Path | None = None
    _counters: dict[str, Counter] | None = field(default=None, repr=False)
    _groups: dict[str, list[str]] | None = field(default=None, repr=False)
    _body: dict[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.signatures, LazySignatures):
            lazy = LazySignatures()
            for name, sig in dict(self.signatures).items():
                lazy[name] = sig
            self.signatures = lazy

    def __contains__(self, name: str) -> bool:
        return name in self.signatures

    def __len__(self) -> int:
        return len(self.signatures)

    def add(self, sig: Signature) -> None:
        """Add or replace one signature (user code) and keep the pre-filter structures in step."""
        self.signatures[sig.name] = sig
        self.failures.pop(sig.name, None)
        if self._counters is not None:
            self._counters[sig.name] = shape_counter(sig.keys, sig.shapes, sig.head)
        if self._body is not None:
            old = self._body.get(sig.name)
            if self._groups is not None and old and sig.name in self._groups.get(old, []):
                self._groups[old].remove(sig.name)
            key = _body_key(sig)
            self._body[sig.name] = key
            if self._groups is not None:
                self._groups.setdefault(key, []).append(sig.name)

    def counters(self) -> dict[str, Counter]:
        if self._counters is None:
            self._counters = {}
        for name in self.signatures:
            if name not in self._counters:
                s = self.signatures[name]
                self._counters[name] = shape_counter(s.keys, s.shapes, s.head)
        return self._counters

    def _bodies(self) -> dict[str, str]:
        if self._body is None:
            self._body = {}
        missing = [n for n in self.signatures if n not in self._body]
        for name in missing:
            self._body[name] = _body_key(self.signatures[name])
        if missing or self._groups is None:
            self._groups = {}
            for n, key in self._body.items():
                self._groups.setdefault(key, []).append(n)
        return self._body

    def group_of(self, name: str) -> list[str]:
        """Every indexed architecture whose signature equals ``name``'s apart from the head size."""
        body = self._body if self._body is not None and self._groups is not None else self._bodies()
        assert self._groups is not None
        return list(self._groups.get(body.get(name, ""), [name]))

    # --- persistence ------------------------------------------------------------------------------------------------

    def save(self, path: Path | None = None) -> Path:
        path = Path(path or self.path or cache_path(self.versions or None))
        path.parent.mkdir(parents=True, exist_ok=True)
        counters, bodies = self.counters(), self._bodies()
        lazy = self.signatures
        assert isinstance(lazy, LazySignatures)
        # Only the libraries' architectures are cached (keyed by their versions); user code and plugins can change
        # without a version bump, so their signatures are recomputed in each process (they are few and cheap).
        keep = [n for n in lazy if n.split(":", 1)[0] in CACHED_SOURCES]
        data = {
            "versions": self.versions, "build_seconds": self.build_seconds,
            "failures": {n: e for n, e in self.failures.items() if n.split(":", 1)[0] in CACHED_SOURCES},
            "prefilter": {n: {"c": [[list(s), k] for s, k in counters[n].items()], "b": bodies[n]} for n in keep},
            "signatures": {n: lazy.text(n) for n in keep},
        }
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        self.path = path
        return path

    @classmethod
    def load(cls, path: Path) -> "SignatureIndex":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        raw = data.get("signatures", {})  # JSON text per signature (older files: plain objects, also read)
        pre = data.get("prefilter", {})
        index = cls(signatures=LazySignatures(raw), failures=dict(data.get("failures", {})),
                    versions=data.get("versions", {}), build_seconds=float(data.get("build_seconds", 0.0)),
                    path=path)
        index._counters = {n: Counter({tuple(s): k for s, k in p["c"]}) for n, p in pre.items()}
        index._body = {n: p["b"] for n, p in pre.items()}
        return index


def shape_counter(keys: list[str], shapes: list[tuple[int, ...]], head: Iterable[str] = ()) -> Counter:
    """Multiset of tensor shapes, without BN counters and head tensors (those vary with the file, not the arch)."""
    skip = set(head)
    return Counter(s for k, s in zip(keys, shapes) if k not in skip and not k.endswith(NBT))


# --- building -----------------------------------------------------------------------------------------------------


def compute_one(name: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """``(name, signature JSON, None)`` or ``(name, None, error)``: one model's failure never stops the build."""
    try:
        return name, compute_signature(REGISTRY.get(name)).to_json(), None
    except Exception as exc:  # recorded and counted
        return name, None, f"{type(exc).__name__}: {str(exc)[:200]}"


def _run_workers(names: list[str], workers: int) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """Compute signatures in ``workers`` child processes (``python -m pthkit.architectures._build_worker``)."""
    import queue
    import subprocess
    import sys
    import threading

    results: queue.Queue = queue.Queue()
    procs = []
    for i in range(workers):
        chunk = names[i::workers]  # interleaved: big model families (alphabetical runs) spread over workers
        proc = subprocess.Popen(
            [sys.executable, "-m", "pthkit.architectures._build_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        procs.append(proc)

        def feed(proc: subprocess.Popen = proc, chunk: list[str] = chunk) -> None:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("\n".join(chunk) + "\n")
            proc.stdin.close()
            seen = set()
            for line in proc.stdout:
                name, data, error = json.loads(line)
                seen.add(name)
                results.put((name, data, error))
            proc.wait()
            for name in chunk:  # a crashed worker (segfault, killed) loses its remaining names: say so
                if name not in seen:
                    results.put((name, None, f"worker exited with code {proc.returncode}"))
            results.put(None)

        threading.Thread(target=feed, daemon=True).start()
    finished = 0
    try:
        while finished < workers:
            item = results.get()
            if item is None:
                finished += 1
            else:
                yield item
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def build_index(
    names: Iterable[str] | None = None, *, workers: int | None = None, progress: bool = True,
    index: SignatureIndex | None = None,
) -> SignatureIndex:
    """Compute signatures for ``names`` (default: every registered architecture not in ``index`` yet)."""
    index = index or SignatureIndex(versions=library_versions())
    todo = [n for n in (list(names) if names is not None else REGISTRY.names())
            if n not in index.signatures and n not in index.failures]
    if not todo:
        return index
    workers = workers or _default_workers()
    start = time.perf_counter()
    builtin = [n for n in todo if n.split(":", 1)[0] in CACHED_SOURCES]
    other = [n for n in todo if n not in set(builtin)]

    def record(name: str, data: dict[str, Any] | None, error: str | None) -> None:
        if data is not None:
            index.add(Signature.from_json(name, data))
        else:
            index.failures[name] = error or "failed"

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # stderr: stdout may be carrying --json output.
    with Progress(TextColumn("signatures"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), disable=not progress, transient=False,
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=len(todo))
        if workers > 1 and len(builtin) > 8:
            for name, data, error in _run_workers(builtin, workers):
                record(name, data, error)
                bar.update(task, advance=1, description=name)
        else:
            other = builtin + other
        for name in other:  # in-process: user code and entry points need this process's registry
            name, data, error = compute_one(name)
            record(name, data, error)
            bar.update(task, advance=1, description=name)
    index.build_seconds += time.perf_counter() - start
    return index


_INDEX: SignatureIndex | None = None


def get_index(*, build: bool = True, progress: bool = True, workers: int | None = None) -> SignatureIndex:
    """The full index: from memory, else from the disk cache, else built (and saved). New registrations are added."""
    global _INDEX
    if _INDEX is None:
        path = cache_path()
        if path.is_file():
            try:
                _INDEX = SignatureIndex.load(path)
            except (OSError, ValueError, KeyError, EOFError):  # a corrupt cache is rebuilt, not trusted
                _INDEX = None
        if _INDEX is None:
            if not build:
                # An in-memory index that grows as signatures are asked for; a later full build completes it.
                _INDEX = SignatureIndex(versions=library_versions(), path=path)
                return _INDEX
            _INDEX = build_index(workers=workers, progress=progress)
            _INDEX.save(path)
    missing = [n for n in REGISTRY.names() if n not in _INDEX.signatures and n not in _INDEX.failures]
    if missing and build:
        build_index(missing, workers=workers, progress=progress, index=_INDEX)
        _INDEX.save()
    return _INDEX


def reset_index() -> None:
    """Forget the in-memory index (tests that change PTHKIT_CACHE_DIR call this)."""
    global _INDEX
    _INDEX = None
