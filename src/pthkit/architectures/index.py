"""The signature index of every registered architecture, cached on disk per library versions.

Cache: ``~/.cache/pthkit/signatures-v2-<versions hash>.zip`` (``PTHKIT_CACHE_DIR`` overrides the folder). A zip of
JSON, never pickle (a cache file must never be able to run code):

- ``index.json``: versions, build time, failures (with attempts) and the pre-filter data of every architecture
  (multiset of tensor shapes and a head-less signature hash): all that ranking a file needs, about 1/20 of the cache.
- ``sig/<name>.json``: one signature each, read on demand through the zip's offset table (about a dozen per call).

The first build runs worker processes (their stderr goes to ``signatures-v2-<hash>.log`` next to the cache), says on
stderr that it is a one-time step and where the cache lives, and holds a file lock so that concurrent processes
build it once. Failed architectures are recorded (``SignatureIndex.failures``) and retried on later runs, up to
:data:`MAX_ATTEMPTS` times. Architectures registered later (user code, entry points) are added without a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pthkit.architectures.registry import REGISTRY
from pthkit.architectures.signatures import NBT, Signature, compute_signature

__all__ = [
    "MAX_ATTEMPTS",
    "LazySignatures",
    "SignatureIndex",
    "build_index",
    "cache_dir",
    "cache_path",
    "get_index",
    "library_versions",
    "reset_index",
]

SCHEMA = 2              # 2: zip with a pre-filter member and one member per signature; head options in signatures
CACHED_SOURCES = ("timm", "torchvision")
MAX_ATTEMPTS = 3        # a failed architecture is retried on this many runs before it is left as failed
LOCK_TIMEOUT_S = 1800.0  # waiting for another process's build longer than this: build in memory, do not save


def library_versions() -> dict[str, str]:
    """The versions the cache is keyed by: a new torch/timm/torchvision/pthkit means new signatures."""
    import timm
    import torch
    import torchvision  # type: ignore[import-untyped]

    import pthkit

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "pthkit": pthkit.__version__, "schema": str(SCHEMA)}


def cache_dir() -> Path:
    """``$PTHKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/pthkit``, else ``~/.cache/pthkit``."""
    env = os.environ.get("PTHKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pthkit"


def cache_path(versions: dict[str, str] | None = None) -> Path:
    versions = versions or library_versions()
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"signatures-v{SCHEMA}-{digest}.zip"


def log_path(path: Path | None = None) -> Path:
    """Where build workers' stderr goes: next to the cache file."""
    return (path or cache_path()).with_suffix(".log")


def _body_key(sig: Signature) -> str:
    """Hash of the signature without its head and BN counters: archs sharing it differ only in num_classes."""
    head = set(sig.head)
    parts = [f"{k}={s}" for k, s in zip(sig.keys, sig.shapes) if k not in head and not k.endswith(NBT)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def _member(name: str) -> str:
    return f"sig/{name}.json"


class _ZipSource:
    """An open cache zip, shared by the signatures read from it; reads are serialised and their bytes counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path)
        self._lock = threading.Lock()
        self.bytes_read = 0

    def read(self, member: str) -> bytes:
        with self._lock:
            info = self._zip.getinfo(member)
            self.bytes_read += info.compress_size
            return self._zip.read(info)

    def close(self) -> None:
        with self._lock:
            self._zip.close()


class LazySignatures(MutableMapping[str, Signature]):
    """Name -> :class:`Signature`, read from the cache and decoded on first access; safe to share between threads.

    Identification reads the pre-filter data of every architecture but the full signature of only a dozen, so a
    signature is read from its own zip member (or decoded from JSON text given to the constructor) when asked.
    """

    def __init__(self, raw: dict[str, Any] | None = None, *, source: _ZipSource | None = None,
                 stored: Iterable[str] = ()) -> None:
        self._raw: dict[str, Any] = dict(raw or {})     # name -> JSON text or object, not decoded yet
        self._source = source
        self._stored: set[str] = set(stored) - set(self._raw)  # names still in the source zip
        self._done: dict[str, Signature] = {}
        self._lock = threading.RLock()

    def __getitem__(self, name: str) -> Signature:
        with self._lock:
            sig = self._done.get(name)
            if sig is not None:
                return sig
            if name in self._raw:
                raw = self._raw.pop(name)
                data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
            elif name in self._stored and self._source is not None:
                data = json.loads(self._source.read(_member(name)))
                self._stored.discard(name)
            else:
                raise KeyError(name)
            sig = Signature.from_json(name, data)
            self._done[name] = sig
            return sig

    def __setitem__(self, name: str, sig: Signature) -> None:
        with self._lock:
            self._raw.pop(name, None)
            self._stored.discard(name)
            self._done[name] = sig

    def __delitem__(self, name: str) -> None:
        with self._lock:
            if name in self._raw:
                del self._raw[name]
            elif name in self._stored:
                self._stored.discard(name)
            else:
                del self._done[name]

    def __contains__(self, name: object) -> bool:
        return name in self._done or name in self._raw or name in self._stored

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            names = list(self._done) + list(self._raw) + sorted(self._stored)
        yield from names

    def __len__(self) -> int:
        return len(self._done) + len(self._raw) + len(self._stored)

    def text(self, name: str) -> str:
        """The JSON text of one signature (without decoding it when it was never used)."""
        with self._lock:
            if name in self._stored and self._source is not None:
                return self._source.read(_member(name)).decode()
            raw = self._raw.get(name)
            if isinstance(raw, (str, bytes)):
                return raw if isinstance(raw, str) else raw.decode()
            return json.dumps(raw if raw is not None else self._done[name].to_json(), separators=(",", ":"))

    def copy(self) -> LazySignatures:
        """A new mapping over the same source: adding to it leaves this one as it is."""
        with self._lock:
            other = LazySignatures(self._raw, source=self._source, stored=self._stored)
            other._done = dict(self._done)
        return other

    @property
    def bytes_read(self) -> int:
        return self._source.bytes_read if self._source is not None else 0


@dataclass
class SignatureIndex:
    """Signatures by qualified name, failures by name, and the fast pre-filter structures.

    ``failures`` maps an architecture whose signature could not be computed to the reason (a worker crash names
    itself and points to the build log); such names are retried by later runs (:data:`MAX_ATTEMPTS`).
    ``bytes_read`` counts compressed cache bytes read so far (the pre-filter once, then signatures on demand).
    """

    signatures: MutableMapping[str, Signature] = field(default_factory=LazySignatures)
    failures: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    build_seconds: float = 0.0
    path: Path | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    prefilter_bytes: int = 0
    complete: bool = False      # loaded from the cache or fully built (an empty build=False index is not)
    _counters: dict[str, Counter] | None = field(default=None, repr=False)
    _groups: dict[str, list[str]] | None = field(default=None, repr=False)
    _body: dict[str, str] | None = field(default=None, repr=False)
    _parent: SignatureIndex | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

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

    @property
    def bytes_read(self) -> int:
        lazy = self.signatures
        return self.prefilter_bytes + (lazy.bytes_read if isinstance(lazy, LazySignatures) else 0)

    def add(self, sig: Signature) -> None:
        """Add or replace one signature (user code) and keep the pre-filter structures in step.

        On an :meth:`overlay`, a library signature (a pure function of the installed versions) is also memoised in
        the index it was made from; user code and failures never are.
        """
        with self._lock:
            self.signatures[sig.name] = sig
            self.failures.pop(sig.name, None)
            self.attempts.pop(sig.name, None)
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
        parent = self._parent
        if parent is not None and sig.name.split(":", 1)[0] in CACHED_SOURCES and sig.name not in parent:
            parent.add(sig)

    def overlay(self) -> SignatureIndex:
        """A private view: what is added to it (user code, failures of an ``include=`` list) stays in it."""
        with self._lock:
            lazy = self.signatures
            return SignatureIndex(
                signatures=lazy.copy() if isinstance(lazy, LazySignatures) else dict(lazy),
                failures=dict(self.failures), versions=dict(self.versions), build_seconds=self.build_seconds,
                path=self.path, attempts=dict(self.attempts), prefilter_bytes=self.prefilter_bytes,
                _counters=dict(self._counters) if self._counters is not None else None,
                _groups={k: list(v) for k, v in self._groups.items()} if self._groups is not None else None,
                _body=dict(self._body) if self._body is not None else None, _parent=self,
            )

    def record_failure(self, name: str, error: str) -> None:
        with self._lock:
            self.failures[name] = error
            self.attempts[name] = self.attempts.get(name, 0) + 1

    def counters(self) -> dict[str, Counter]:
        with self._lock:
            if self._counters is None:
                self._counters = {}
            for name in self.signatures:
                if name not in self._counters:
                    s = self.signatures[name]
                    self._counters[name] = shape_counter(s.keys, s.shapes, s.head)
            return self._counters

    def _bodies(self) -> dict[str, str]:
        with self._lock:
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
        with self._lock:
            body = self._body if self._body is not None and self._groups is not None else self._bodies()
            assert self._groups is not None
            return list(self._groups.get(body.get(name, ""), [name]))

    # --- persistence ------------------------------------------------------------------------------------------------

    def save(self, path: Path | None = None) -> Path:
        """Write the cache zip atomically (a concurrent reader never sees half a file); library archs only."""
        path = Path(path or self.path or cache_path(self.versions or None))
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            counters, bodies = self.counters(), self._bodies()
            lazy = self.signatures
            assert isinstance(lazy, LazySignatures)
            # Only the libraries' architectures are cached (keyed by their versions); user code and plugins can
            # change without a version bump, so their signatures are recomputed in each process (few and cheap).
            keep = sorted(n for n in lazy if n.split(":", 1)[0] in CACHED_SOURCES)
            meta = {
                "versions": self.versions, "build_seconds": self.build_seconds,
                "failures": {n: {"error": e, "attempts": self.attempts.get(n, 1)}
                             for n, e in sorted(self.failures.items()) if n.split(":", 1)[0] in CACHED_SOURCES},
            }
            # Shapes once in a table; per architecture a flat [shape id, count, ...] list (fast to decode).
            table: dict[tuple[int, ...], int] = {}
            pre: dict[str, Any] = {}
            for n in keep:
                flat: list[int] = []
                for s, k in counters[n].items():
                    flat += [table.setdefault(s, len(table)), k]
                pre[n] = {"c": flat, "b": bodies[n]}
            meta["shapes"] = [list(s) for s in table]
            meta["prefilter"] = pre
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
            try:
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
                    zf.writestr("index.json", json.dumps(meta, separators=(",", ":")))
                    for name in keep:
                        zf.writestr(_member(name), lazy.text(name))
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
        self.path = path
        return path

    @classmethod
    def load(cls, path: Path) -> SignatureIndex:
        """Open a cache zip: the pre-filter is read now, signatures when asked for."""
        source = _ZipSource(path)
        try:
            meta_bytes = source.read("index.json")
            meta = json.loads(meta_bytes)
            pre = meta["prefilter"]
            failures = meta.get("failures", {})
            index = cls(
                signatures=LazySignatures(source=source, stored=pre), versions=meta.get("versions", {}),
                failures={n: str(f.get("error", "failed")) for n, f in failures.items()},
                attempts={n: int(f.get("attempts", 1)) for n, f in failures.items()},
                build_seconds=float(meta.get("build_seconds", 0.0)), path=path, prefilter_bytes=source.bytes_read,
                complete=True,
            )
            shapes = [tuple(s) for s in meta["shapes"]]
            index._counters = {}
            for n, p in pre.items():
                flat = p["c"]
                index._counters[n] = Counter(dict(zip([shapes[i] for i in flat[0::2]], flat[1::2])))
            index._body = {n: p["b"] for n, p in pre.items()}
        except Exception:
            source.close()
            raise
        source.bytes_read = 0  # counted in prefilter_bytes
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
    except Exception as exc:  # noqa: BLE001 - recorded and counted
        return name, None, f"{type(exc).__name__}: {str(exc)[:200]}"


def _worker_command() -> list[str]:
    return [sys.executable, "-m", "pthkit.architectures._build_worker"]


def _run_workers(
    names: list[str], workers: int, log: Path | None = None,
) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """Compute signatures in ``workers`` child processes (``python -m pthkit.architectures._build_worker``).

    Workers' stderr is appended to ``log`` (default: next to the cache). A worker that dies (segfault, killed) is
    reported: the name it was computing fails with its exit code, and its remaining names go to a new round.
    """
    import queue
    import subprocess
    import threading

    log = log or log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    pending = list(names)
    with open(log, "a", encoding="utf-8") as log_fh:
        while pending:
            log_fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {len(pending)} signatures, "
                         f"{workers} workers\n")
            log_fh.flush()
            results: queue.Queue = queue.Queue()
            procs = []
            n = max(1, min(workers, len(pending)))
            for i in range(n):
                chunk = pending[i::n]  # interleaved: big model families (alphabetical runs) spread over workers
                proc = subprocess.Popen(
                    _worker_command(), stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=log_fh, text=True, bufsize=1,
                )
                procs.append(proc)

                def feed(proc: subprocess.Popen = proc, chunk: list[str] = chunk,
                         results: queue.Queue = results) -> None:
                    assert proc.stdin is not None and proc.stdout is not None
                    seen: set[str] = set()
                    try:
                        proc.stdin.write("\n".join(chunk) + "\n")
                        proc.stdin.close()
                        for line in proc.stdout:
                            name, data, error = json.loads(line)
                            seen.add(name)
                            results.put((name, data, error))
                    except (OSError, ValueError):  # the worker died mid-write or wrote garbage: reported below
                        pass
                    proc.wait()
                    lost = [name for name in chunk if name not in seen]
                    if lost:  # the first lost name is the one it was computing when it died
                        error = f"worker exited with code {proc.returncode} while computing it (see {log})"
                        results.put((lost[0], None, error))
                        results.put(("", lost[1:], None))
                    results.put(None)

                threading.Thread(target=feed, daemon=True).start()
            finished = 0
            again: list[str] = []
            try:
                while finished < n:
                    item = results.get()
                    if item is None:
                        finished += 1
                    elif item[0] == "":
                        again += item[1]
                    else:
                        yield item
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
            if len(again) >= len(pending):
                break  # no progress (cannot happen: each round fails at least one name); never loop forever
            pending = again


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def build_index(
    names: Iterable[str] | None = None, *, workers: int | None = None, progress: bool = True,
    index: SignatureIndex | None = None,
) -> SignatureIndex:
    """Compute signatures for ``names`` (default: every registered architecture neither in ``index`` nor failed).

    Names given explicitly are (re)tried even when they failed before. Failures are recorded in ``index.failures``.
    """
    index = index if index is not None else SignatureIndex(versions=library_versions())
    if names is None:
        todo = [n for n in REGISTRY.names() if n not in index.signatures and n not in index.failures]
    else:
        todo = [n for n in dict.fromkeys(names) if n not in index.signatures]
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
            index.record_failure(name, error or "failed")

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    # stderr: stdout may be carrying --json output.
    with Progress(TextColumn("signatures"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), disable=not progress, transient=False,
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=len(todo))
        if workers > 1 and len(builtin) > 8:
            for name, data, error in _run_workers(builtin, workers, log_path(index.path)):
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
_INDEX_LOCK = threading.RLock()


def _say(message: str) -> None:
    print(f"pthkit: {message}", file=sys.stderr, flush=True)


def _try_load(path: Path) -> SignatureIndex | None:
    if not path.is_file():
        return None
    try:
        return SignatureIndex.load(path)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # a corrupt or foreign cache is rebuilt, not trusted


def _file_lock(path: Path) -> Any:
    """An inter-process lock next to the cache file (filelock: the same package huggingface_hub uses)."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_suffix(".lock")), timeout=LOCK_TIMEOUT_S)


_RETRIED: set[str] = set()  # failures retried by this process already (once per process, not per call)


def _retry_names(index: SignatureIndex) -> list[str]:
    known = set(REGISTRY.names())
    return [n for n in index.failures
            if index.attempts.get(n, 1) < MAX_ATTEMPTS and n in known and n not in _RETRIED]


def _report_failures(index: SignatureIndex, names: Iterable[str]) -> None:
    failed = [n for n in names if n in index.failures]
    if failed:
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        _say(f"{len(failed)} architectures could not be indexed ({shown}); they are retried on later runs "
             f"(up to {MAX_ATTEMPTS} times); worker log: {log_path(index.path)}")


def get_index(*, build: bool = True, progress: bool = True, workers: int | None = None) -> SignatureIndex:
    """The full index: from memory, else from the disk cache, else built once (and saved). New registrations and
    failures due for a retry are added.

    ``build=False`` never builds: it returns a private :meth:`~SignatureIndex.overlay` of what is there (maybe
    nothing), for callers that add the few signatures they need without changing the shared index.
    """
    global _INDEX
    with _INDEX_LOCK:
        path = cache_path()
        if _INDEX is None or _INDEX.path != path:  # first use, or PTHKIT_CACHE_DIR / library versions changed
            _INDEX = _try_load(path)
        if _INDEX is None and not build:
            _INDEX = SignatureIndex(versions=library_versions(), path=path)
        if not build:
            assert _INDEX is not None
            return _INDEX.overlay()
        if _INDEX is None or not _INDEX.complete or _INDEX.path != path:
            lock: Any = None
            try:
                lock = _file_lock(path)
                lock.acquire()
            except Exception as exc:  # noqa: BLE001 - read-only cache folder, or another build that takes too long
                _say(f"cannot lock the signature cache ({type(exc).__name__}: {exc}); building in memory only")
                lock = None
            try:
                loaded = _try_load(path)  # another process may have built it while this one waited
                if loaded is not None:
                    _INDEX = loaded
                else:
                    names = REGISTRY.names()
                    _say(f"building the signature index of {len(names)} architectures: a one-time step (a few "
                         f"minutes), cached in {path.parent} (set PTHKIT_CACHE_DIR to move it)")
                    _INDEX = build_index(workers=workers, progress=progress,
                                         index=SignatureIndex(versions=library_versions(), path=path))
                    _INDEX.complete = True
                    _RETRIED.update(_INDEX.failures)
                    _report_failures(_INDEX, names)
                    if lock is not None:
                        _INDEX.save(path)
            finally:
                if lock is not None:
                    lock.release()
        index = _INDEX
        missing = [n for n in REGISTRY.names() if n not in index.signatures and n not in index.failures]
        retry = _retry_names(index)
        _RETRIED.update(retry)
        if missing or retry:
            build_index(missing + retry, workers=workers, progress=progress, index=index)
            _report_failures(index, retry + missing)
            if any(n.split(":", 1)[0] in CACHED_SOURCES for n in missing + retry):
                try:
                    with _file_lock(path):
                        index.save(path)
                except Exception as exc:  # noqa: BLE001 - the index in memory is complete; saving is a bonus
                    _say(f"could not save the signature cache ({type(exc).__name__}: {exc})")
        return index


def reset_index() -> None:
    """Forget the in-memory index (tests that change PTHKIT_CACHE_DIR call this)."""
    global _INDEX
    with _INDEX_LOCK:
        _INDEX = None
