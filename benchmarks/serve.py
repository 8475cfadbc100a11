"""Load test of `pthkit serve`: open-loop arrivals on loopback, latency percentiles, throughput, batching gain, soak.

Two servers, one after the other, on 127.0.0.1 with the real EfficientNet-Lite0 weights (`--arch` given):
`--max-batch-size 1` (no batching) and `--max-batch-size 32 --batch-timeout-ms 10` (dynamic batching). The
request is one JPEG photo (scikit-learn's china.jpg, 640x427, 191 KB) as a multipart upload.

The generator is open-loop: requests are *scheduled* at a fixed arrival rate, whatever the server does, and sent
over `concurrency` keep-alive connections (a request waits for a free connection; that wait counts). Closed-loop
load (send the next request when one returns) slows down with the server and hides queueing delay.

1. Capacity at concurrency 1, 8, 32 (each server): arrivals faster than the server can go (300/s), bounded by a
   request count and a time limit; throughput = answered / time; latency percentiles from send to answer (the
   service latency with `concurrency` requests outstanding).
2. Soak (dynamic batching): 2 minutes at 80% of its measured capacity at concurrency 32, latency from the
   *scheduled* arrival (queueing included); failed requests counted; RSS of the server's whole process tree
   (main, HTTP server, queue manager, inference worker) sampled every 5 s, growth = last vs first sample.

Loopback only, bounded in count and time, stops by itself (servers get SIGTERM at the end). Results go to
benchmarks/results/serve.md.

    .venv/bin/python benchmarks/serve.py [--soak-seconds 120] [--capacity-seconds 15] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _machine import cpu_name, loadavg  # noqa: E402

ROOT = HERE.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
CONCURRENCIES = (1, 8, 32)
OVERLOAD_RATE = 300.0


# --- server ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                return -9
        return int(self.process.returncode)


def start_server(weights: Path, workdir: Path, *args: str) -> Server:
    import urllib.request

    port = free_port()
    log = workdir / f"serve-{port}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("PTHKIT_CACHE_DIR", str(workdir / "cache"))
    cmd = [PYTHON, "-m", "pthkit", "serve", str(weights), "--arch", "timm:tf_efficientnet_lite0",
           "--host", HOST, "--port", str(port), *args]
    with open(log, "wb") as fh:
        process = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                   start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return Server(process, port, log)
        except OSError:
            pass
        time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit("server did not become healthy in 300 s")


def _pss_kb(pid: int) -> int:
    """Proportional set size (shared pages split between the processes sharing them; forked processes share most of
    their memory, so plain RSS would count it once per process); RSS where smaps_rollup is missing."""
    for name, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(name, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def tree_rss_mb(pid: int) -> float:
    """Memory (PSS) of ``pid`` and all its descendants (from /proc), in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total_kb = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        total_kb += _pss_kb(p)
    return total_kb / 1024.0


# --- client ----------------------------------------------------------------------------------------------------------


def multipart_request(port: int, image: Path) -> bytes:
    boundary = uuid.uuid4().hex
    data = image.read_bytes()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{image.name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length = 0
    close = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == "content-length":
            length = int(value.strip())
        elif key.strip().lower() == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


@dataclass
class Run:
    concurrency: int
    rate: float
    scheduled: int = 0
    records: list[tuple[float, float, float, int]] = field(default_factory=list)  # (scheduled, sent, done, status)
    failures: int = 0
    first_error: str = ""
    started: float = 0.0
    ended: float = 0.0

    @property
    def ok(self) -> list[tuple[float, float, float, int]]:
        return [r for r in self.records if r[3] == 200]

    def throughput(self) -> float:
        ok = self.ok
        if len(ok) < 2:
            return 0.0
        span = max(r[2] for r in ok) - self.started
        return len(ok) / span if span > 0 else 0.0

    def percentiles(self, since_scheduled: bool) -> tuple[float, float, float]:
        lat = sorted(((r[2] - (r[0] if since_scheduled else r[1])) * 1000.0) for r in self.ok)
        if not lat:
            return (float("nan"),) * 3  # type: ignore[return-value]
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
        return q[49], q[94], q[98]


async def drive(port: int, request: bytes, *, concurrency: int, rate: float, max_requests: int,
                max_seconds: float, timeout: float = 60.0) -> Run:
    """Open-loop: schedule ``rate`` requests per second (at most ``max_requests`` / ``max_seconds``) over
    ``concurrency`` keep-alive connections; wait for every answer (each bounded by ``timeout``)."""
    run = Run(concurrency, rate)
    queue: asyncio.Queue[float | None] = asyncio.Queue()

    async def connection() -> None:
        reader = writer = None
        while True:
            scheduled = await queue.get()
            if scheduled is None:
                break
            sent = time.perf_counter()
            status = -2
            for attempt in (0, 1):
                reused = writer is not None
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(HOST, port)
                    assert reader is not None
                    writer.write(request)
                    await writer.drain()
                    status, body, close = await asyncio.wait_for(read_response(reader), timeout)
                    if status == 200 and b'"classes"' not in body:
                        status = -1
                    if status != 200 and not run.first_error:
                        run.first_error = f"{status}: {body[:200]!r}"
                    if close:
                        writer.close()
                        reader = writer = None
                    break
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                        ValueError) as err:
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    # A kept-alive connection the server closed while idle fails before any answer: like every
                    # HTTP client, reconnect and send once more. Anything else is a failure.
                    if attempt == 0 and reused and isinstance(err, (ConnectionError, asyncio.IncompleteReadError)):
                        continue
                    status = -2
                    if not run.first_error:
                        run.first_error = f"{type(err).__name__}: {err}"
                    break
            done = time.perf_counter()
            run.records.append((scheduled, sent, done, status))
            if status != 200:
                run.failures += 1
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(concurrency)]
    run.started = time.perf_counter()
    for i in range(max_requests):
        target = run.started + i / rate
        if target - run.started > max_seconds:
            break
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(target)
        run.scheduled += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    run.ended = time.perf_counter()
    return run


def capacity(port: int, request: bytes, concurrency: int, seconds: float) -> Run:
    """Requests arrive faster than served; stop scheduling after ``seconds``; measure what came back."""
    asyncio.run(drive(port, request, concurrency=concurrency, rate=OVERLOAD_RATE, max_requests=concurrency * 4,
                      max_seconds=2.0))  # warm the connections and the batch sizes
    limit = max(3 * concurrency, 40)
    # Arrivals are bounded by count; the count is sized so the run takes about ``seconds`` at a few req/s.
    return asyncio.run(drive(port, request, concurrency=concurrency, rate=OVERLOAD_RATE,
                             max_requests=max(limit, int(seconds * 8)), max_seconds=seconds))


async def soak_run(server: Server, request: bytes, rate: float, seconds: float, rss: list[tuple[float, float]]) -> Run:
    """``seconds`` of open-loop arrivals at ``rate`` over 32 connections; the server tree's RSS every 5 s."""
    rss.append((0.0, tree_rss_mb(server.process.pid)))
    task = asyncio.create_task(drive(server.port, request, concurrency=32, rate=rate,
                                     max_requests=int(rate * seconds) + 1, max_seconds=seconds))
    t0 = time.perf_counter()
    while not task.done():
        await asyncio.wait({task}, timeout=5.0)
        rss.append((time.perf_counter() - t0, tree_rss_mb(server.process.pid)))
    return await task


def server_threads(port: int) -> str:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}/info", timeout=10) as r:
        info = json.load(r)
    t = info.get("threads") or {}
    return f"{t.get('intra_op')} ({t.get('why')})"


def model_only(threads: int, seconds: float = 4.0) -> dict[int, float]:
    """The ceiling: lite0 forward passes on ready tensors, images/s at batch 1, 8 and 32, ``threads`` threads."""
    import timm
    import torch

    torch.set_num_threads(threads)
    model = timm.create_model("tf_efficientnet_lite0").eval()
    out: dict[int, float] = {}
    with torch.inference_mode():
        for bs in (1, 8, 32):
            x = torch.randn(bs, 3, 224, 224).contiguous(memory_format=torch.channels_last)
            model(x)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                model(x)
                n += 1
            out[bs] = n * bs / (time.perf_counter() - t0)
    return out


# --- report ----------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="5 s capacity runs, 20 s soak (a smoke test)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve.md")
    args = parser.parse_args()
    if args.quick:
        args.soak_seconds, args.capacity_seconds = 20.0, 5.0

    sys.path.insert(0, str(ROOT / "src"))
    from pthkit.samples import efficientnet_lite0_weights, sklearn_photo

    weights = efficientnet_lite0_weights()
    image = sklearn_photo("china.jpg")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"pthkit-bench-serve-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    started_at = datetime.now(timezone.utc)
    results: dict[str, dict[int, Run]] = {}
    soak: Run | None = None
    rss: list[tuple[float, float]] = []
    exit_codes: dict[str, int] = {}
    threads: dict[str, str] = {}

    configs = {"batch 1 (no batching)": ["--max-batch-size", "1"],
               "dynamic (batch <= 32, 10 ms)": ["--max-batch-size", "32", "--batch-timeout-ms", "10"]}
    for name, flags in configs.items():
        print(f"== {name}", flush=True)
        server = start_server(weights, workdir, *flags)
        request = multipart_request(server.port, image)
        threads[name] = server_threads(server.port)
        try:
            results[name] = {}
            for c in CONCURRENCIES:
                run = capacity(server.port, request, c, args.capacity_seconds)
                results[name][c] = run
                p50, p95, p99 = run.percentiles(since_scheduled=False)
                print(f"  c={c:>2}: {run.throughput():6.1f} req/s  p50 {p50:7.1f}  p95 {p95:7.1f}  p99 {p99:7.1f} ms"
                      f"  ({len(run.ok)} ok, {run.failures} failed) load {loadavg()}", flush=True)
            if name.startswith("dynamic"):
                rate = 0.8 * results[name][32].throughput()
                print(f"  soak: {args.soak_seconds:.0f} s at {rate:.1f} req/s, concurrency 32", flush=True)
                soak = asyncio.run(soak_run(server, request, rate, args.soak_seconds, rss))
                p50, p95, p99 = soak.percentiles(since_scheduled=True)
                print(f"  soak: {len(soak.ok)}/{soak.scheduled} ok, {soak.failures} failed, p50 {p50:.1f} p95 "
                      f"{p95:.1f} p99 {p99:.1f} ms, RSS {rss[0][1]:.0f} -> {rss[-1][1]:.0f} MB", flush=True)
        finally:
            exit_codes[name] = server.stop()

    worker_threads = int(next(iter(threads.values())).split()[0]) if threads else 1
    print(f"== model only, {worker_threads} thread(s)", flush=True)
    ceiling = model_only(worker_threads, seconds=args.capacity_seconds / 3)
    print("  " + ", ".join(f"batch {b}: {v:.1f} img/s" for b, v in ceiling.items()), flush=True)
    write_report(args, results, soak, rss, exit_codes, load_start, loadavg(), started_at, image, threads, ceiling)
    print(f"wrote {args.out}")
    return 0


def write_report(args: argparse.Namespace, results: dict[str, dict[int, Run]], soak: Run | None,
                 rss: list[tuple[float, float]], exit_codes: dict[str, int], load_start: str, load_end: str,
                 started_at: datetime, image: Path, threads: dict[str, str], ceiling: dict[int, float]) -> None:
    import torch

    import pthkit

    lines = [
        "# `pthkit serve` load test",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, Python {platform.python_version()}, pthkit {pthkit.__version__}.",
        f"Date: {started_at:%Y-%m-%d %H:%M} UTC. Load average (1/5/15 min) at start {load_start}, at end {load_end} "
        "(the 2 cores are shared with other jobs: absolute numbers move with the load; the comparisons run back to "
        "back).",
        f"Model: real EfficientNet-Lite0 weights (`--arch timm:tf_efficientnet_lite0`), one worker. Request: "
        f"{image.name} ({image.stat().st_size // 1024} KB JPEG) as a multipart upload, over loopback.",
        "Command: `.venv/bin/python benchmarks/serve.py" + (" --quick" if args.quick else "") + "`.",
        "Worker intra-op threads (decided by the server at start, see /info): "
        + "; ".join(f"{k}: {v}" for k, v in threads.items()) + ".",
        "",
        f"## Capacity at concurrency 1, 8, 32 (open-loop arrivals at {OVERLOAD_RATE:.0f}/s, above capacity; "
        f"{args.capacity_seconds:.0f} s per point)",
        "",
        "Latency: send to answer (service latency with `concurrency` requests outstanding).",
        "",
        "| server | concurrency | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | answered | failed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        for c, run in runs.items():
            p50, p95, p99 = run.percentiles(since_scheduled=False)
            lines.append(f"| {name} | {c} | {run.throughput():.1f} | {p50:.0f} | {p95:.0f} | {p99:.0f} | "
                         f"{len(run.ok)} | {run.failures} |")
    names = list(results)
    if len(names) == 2 and 32 in results[names[0]] and 32 in results[names[1]]:
        base, dyn = results[names[0]][32].throughput(), results[names[1]][32].throughput()
        gain = dyn / base if base else float("nan")
        lines += ["", f"**Dynamic batching at concurrency 32: {dyn:.1f} vs {base:.1f} req/s = {gain:.2f}x** "
                      f"(target >= 2x: {'met' if gain >= 2 else 'NOT met'})."]
    if ceiling:
        lines += ["", "Model-only ceiling, measured right after (lite0 forward on ready tensors, same thread count): "
                  + ", ".join(f"batch {b}: {v:.1f} img/s" for b, v in ceiling.items())
                  + f" - batching alone gains {max(ceiling.values()) / ceiling[1]:.2f}x at most on this CPU now."]
    if soak is not None:
        p50, p95, p99 = soak.percentiles(since_scheduled=True)
        growth = (rss[-1][1] / rss[0][1] - 1.0) * 100.0 if rss and rss[0][1] else float("nan")
        peak = max(v for _, v in rss) if rss else float("nan")
        lines += [
            "",
            f"## Soak: {args.soak_seconds:.0f} s at 80% of capacity ({soak.rate:.1f} req/s, concurrency 32, dynamic "
            "batching)",
            "",
            "Latency from the *scheduled* arrival (queueing included).",
            "",
            "| scheduled | answered 200 | failed | p50 (ms) | p95 (ms) | p99 (ms) | RSS first (MB) | RSS last (MB) | "
            "RSS peak (MB) | growth |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {soak.scheduled} | {len(soak.ok)} | {soak.failures} | {p50:.0f} | {p95:.0f} | {p99:.0f} | "
            f"{rss[0][1]:.0f} | {rss[-1][1]:.0f} | {peak:.0f} | {growth:+.1f}% |",
            "",
            "RSS: proportional set size (PSS) of the server's whole process tree (main, uvicorn HTTP process, "
            "LitServe queue manager, inference worker), sampled every 5 s.",
        ]
        if soak.first_error:
            lines.append(f"First failure: `{soak.first_error}`.")
    lines += ["", "Server exit codes after SIGTERM: " + ", ".join(f"{k}: {v}" for k, v in exit_codes.items()) + "."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
