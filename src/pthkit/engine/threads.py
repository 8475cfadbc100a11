"""Thread policy, decided once by the caller (the CLI), never by the library per batch.

The library never calls ``torch.set_num_threads``: intra-op threads are process-wide and belong to the application.
The CLI calls :func:`cli_thread_policy` once at start: with no explicit ``--threads``, the model gets the cores other
processes leave free (sampled from ``/proc/stat`` over ~0.1 s), at least 1. Why: a model with as many OpenMP threads
as cores while another process holds one stalls at every barrier waiting for a thread that is not scheduled
(measured 2.5-3x slower on the 2-core machine under load: lite0 11 img/s with 2 threads vs 29 with 1).

Also here: how many decoding threads / DataLoader workers a run uses (:func:`auto_decode_threads`,
:func:`auto_workers`), pure functions of the machine and the input count.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

__all__ = ["ThreadDecision", "auto_decode_threads", "auto_workers", "cli_thread_policy", "cores", "other_load"]

# Below this many inputs, starting worker processes costs more than decoding in the main process.
MIN_INPUTS_FOR_WORKERS = 16
MAX_WORKERS = 8


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers(num_inputs: int, device_type: str = "cpu") -> int:
    """DataLoader workers for ``num_inputs`` images: none for a handful; else, when the model runs on the CPU too, a
    quarter of the cores (at least 1: with reduced-size JPEG decoding, decoding costs far less than the model), and
    one per core (up to 8) when the model runs on an accelerator.

    Measured on the 2-core machine (benchmarks/predict.py, quiet): 1 worker + 2 model threads ≈ 2 workers + 2 threads
    (38-43 vs 36-41 img/s), both far above 1 model thread (27-31 img/s), so the model keeps every core.
    """
    if num_inputs < MIN_INPUTS_FOR_WORKERS:
        return 0
    n = cores()
    if device_type == "cpu":
        return max(1, min(MAX_WORKERS, n // 4))
    return max(1, min(n, MAX_WORKERS))


def auto_decode_threads() -> int:
    """Decoding threads for a CPU run: one per core, up to 8 (PIL's decode and resize release the GIL; the threads
    run at a lower priority than the model's, see :mod:`pthkit.data.images`)."""
    return max(1, min(MAX_WORKERS, cores()))


def _busy() -> tuple[float, float] | None:
    """(CPU seconds used by all processes, by this process) so far, or ``None`` where ``/proc/stat`` is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), time.process_time()


def other_load(sample_s: float = 0.1) -> float | None:
    """Cores used by *other* processes over the next ``sample_s`` seconds (``None`` when unknown)."""
    if cores() != (os.cpu_count() or 0):  # /proc/stat counts every CPU: only meaningful with all of them
        return None
    first = _busy()
    if first is None:
        return None
    start = time.perf_counter()
    time.sleep(sample_s)
    second = _busy()
    if second is None:
        return None
    wall = time.perf_counter() - start
    return max(0.0, (second[0] - first[0]) - (second[1] - first[1])) / wall


@dataclass(frozen=True)
class ThreadDecision:
    """What :func:`cli_thread_policy` chose and why (one ``--explain`` line)."""

    threads: int
    reason: str


def cli_thread_policy(threads: int | None = None, *, sample_s: float = 0.1, apply: bool = True) -> ThreadDecision:
    """The CLI's thread policy, called once before a run (never by the library).

    ``threads`` given: use it. Else the cores other processes leave free over a ``sample_s`` sample (at least 1,
    at most torch's current setting). ``apply=False`` only decides.
    """
    import torch

    current = torch.get_num_threads()
    if threads is not None:
        decision = ThreadDecision(max(1, int(threads)), "given")
    else:
        others = other_load(sample_s)
        if others is None:
            decision = ThreadDecision(current, "torch default (machine load unknown)")
        else:
            free = max(1, min(current, round(cores() - others)))
            decision = ThreadDecision(free, f"{free} of {cores()} cores free (others used {others:.1f})")
    if apply and decision.threads != current:
        torch.set_num_threads(decision.threads)
    return decision
