"""Build and run the LitServe server for one model: :func:`build_server` and :func:`serve`.

Process layout (LitServe's): this process opens the model once (so an unsafe or unreadable file is refused before
anything listens, and ``/info`` can describe it), starts the inference workers (``--workers``, spawned: each re-opens
the model from a :class:`~pthkit.serve.model.ServePlan` and warms it up), and only when a worker is ready forks the
HTTP server process that listens. Requests are batched dynamically by LitServe: a worker takes up to
``max_batch_size`` requests, waiting at most ``batch_timeout`` for the batch to fill.

Shutdown: SIGTERM (or SIGINT) to this process stops the HTTP server first — uvicorn stops accepting and finishes
the requests in flight while the workers still run — then LitServe stops the workers, and :func:`serve` returns
(exit code 0).
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pthkit.errors import PreprocessError
from pthkit.serve.model import ServedModel, ServePlan, open_served

if TYPE_CHECKING:
    import litserve as ls

__all__ = ["ServeConfig", "build_server", "serve", "server_info"]

log = logging.getLogger("pthkit.serve")

# LitServe binds only these (its run() refuses others).
_HOSTS = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "0.0.0.0": "0.0.0.0", "::": "::"}
# Seconds an idle kept-alive connection stays open (uvicorn's default, 5 s, is shorter than most clients and load
# balancers keep theirs: a client would then send on a connection the server is closing).
KEEP_ALIVE_SECONDS = 65
# Seconds uvicorn waits for requests in flight at shutdown (LitServe's uvicorn_graceful_timeout).
GRACEFUL_SECONDS = 30


@dataclass(frozen=True)
class ServeConfig:
    """Server settings (the ``pthkit serve`` flags) and the model plan."""

    plan: ServePlan
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 32
    batch_timeout_ms: float = 10.0
    workers: int = 1
    max_upload_mb: float = 20.0
    default_top_k: int = 5
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "ServeConfig":
        """Raise :class:`PreprocessError` (one line) for a value the server cannot use."""
        if self.host not in _HOSTS:
            raise PreprocessError.build("--host", received=repr(self.host),
                                        expected="127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface)")
        _int_in("--port", self.port, 1024, 65535)
        _int_in("--max-batch-size", self.max_batch_size, 1, 1024)
        _int_in("--workers", self.workers, 1, 64)
        if not (math.isfinite(self.batch_timeout_ms) and 0 <= self.batch_timeout_ms <= 10_000):
            raise PreprocessError.build("--batch-timeout-ms", received=repr(self.batch_timeout_ms),
                                        expected="milliseconds from 0 to 10000")
        if not (math.isfinite(self.max_upload_mb) and 0 < self.max_upload_mb <= 2048):
            raise PreprocessError.build("--max-upload-mb", received=repr(self.max_upload_mb),
                                        expected="megabytes, more than 0 and at most 2048")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def _int_in(flag: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PreprocessError.build(flag, received=repr(value), expected=f"an integer from {low} to {high}")


def server_info(served: ServedModel, config: ServeConfig) -> dict[str, Any]:
    """``GET /info``: the model (architecture, load evidence, preprocessing with provenance, labels), backend,
    batching settings and pthkit version."""
    import pthkit

    return {
        "pthkit_version": pthkit.__version__,
        "model": served.info(),
        "backend": served.plan.backend,
        "threads": {"intra_op": served.plan.threads, "why": served.plan.threads_reason},
        "input": {"kind": "image" if served.is_image_model else "rows", "row_width": served.row_width},
        "batching": {"max_batch_size": config.max_batch_size, "batch_timeout_ms": config.batch_timeout_ms,
                     "workers": config.workers},
        "limits": {"max_upload_mb": config.max_upload_mb, "default_top_k": config.default_top_k},
        "endpoints": {"predict": "POST /predict", "health": "GET /health", "info": "GET /info", "docs": "GET /docs",
                      "page": "GET /"},
    }


def build_server(config: ServeConfig, served: ServedModel | None = None) -> tuple["ls.LitServer", ServedModel]:
    """The LitServer for ``config`` (model opened here unless ``served`` is given) and the opened model."""
    try:
        import litserve as ls
    except ImportError as err:  # pragma: no cover - depends on the install
        raise PreprocessError.build("pthkit serve", received=f"no litserve ({err})", expected="the serve extra",
                                    hint="pip install 'pthkit[serve]'") from err
    from pthkit.serve.api import PthkitAPI
    from pthkit.serve.http import RequestGate

    config.validate()
    if served is None:
        served = open_served(config.plan)
    served.plan = _with_threads(served.plan)
    device = str(served.model.device)
    accelerator = "cuda" if device.startswith("cuda") else "cpu"
    api = PthkitAPI(served.plan, max_batch_size=config.max_batch_size,
                    batch_timeout=config.batch_timeout_ms / 1000.0)
    gate = (RequestGate, {"max_upload_bytes": config.max_upload_bytes, "image_model": served.is_image_model,
                          "row_width": served.row_width, "default_top_k": config.default_top_k})
    server = ls.LitServer(
        api, accelerator=accelerator, devices=1, workers_per_device=config.workers, timeout=120,
        info_path="/litserve-info", middlewares=[gate], model_metadata={"architecture": served.architecture},
    )
    server.uvicorn_graceful_timeout = GRACEFUL_SECONDS
    _add_routes(server, served, config)
    return server, served


def _with_threads(plan: ServePlan) -> ServePlan:
    """Decide the worker's intra-op threads once, here (``--threads``, else the cores other processes leave free:
    :func:`pthkit.engine.threads.cli_thread_policy`); the worker applies the decision at start."""
    from dataclasses import replace

    from pthkit.engine.threads import cli_thread_policy

    decision = cli_thread_policy(plan.threads, apply=False)
    return replace(plan, threads=decision.threads, threads_reason=decision.reason)


def _add_routes(server: "ls.LitServer", served: ServedModel, config: ServeConfig) -> None:
    """Replace LitServe's ``/`` and ``/info`` with pthkit's page and description; document ``POST /predict``."""
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.routing import APIRoute

    from pthkit.serve.http import page_html

    app = server.app
    app.title = f"pthkit serve: {served.architecture}"
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in ("/", "/litserve-info")]
    info = server_info(served, config)
    html = page_html()

    async def page() -> HTMLResponse:
        return HTMLResponse(html)

    async def info_route() -> JSONResponse:
        return JSONResponse(info)

    app.add_api_route("/", page, methods=["GET"], summary="Web page: upload an image, see the top classes",
                      response_class=HTMLResponse, response_model=None)
    app.add_api_route("/info", info_route, methods=["GET"],
                      summary="How the model was loaded and preprocessed, labels, backend, batching settings",
                      response_model=None)
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == "/predict":
            route.summary = "Predict one image (multipart field 'file' or JSON image) or rows (JSON inputs)"
            route.description = (
                "Answers as one line of `pthkit predict --json` plus `model` and `elapsed_ms`. Errors: 400 not an "
                "image / truncated / decompression bomb / malformed body, 413 over --max-upload-mb, 422 rows of the "
                "wrong width.")
            route.openapi_extra = _PREDICT_OPENAPI
        elif isinstance(route, APIRoute) and route.path == "/health":
            route.summary = "200 once the model is loaded and warmed up in a worker, else 503"


_PREDICT_OPENAPI: dict[str, Any] = {
    "parameters": [{"name": "top_k", "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5}}],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"}, "top_k": {"type": "integer"}}}},
            "application/json": {"schema": {"oneOf": [
                {"type": "object", "required": ["image"], "properties": {
                    "image": {"type": "string", "description": "base64 (or a data: URL)"},
                    "top_k": {"type": "integer"}}},
                {"type": "object", "required": ["inputs"], "properties": {
                    "inputs": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                    "top_k": {"type": "integer"}}},
            ]}},
        },
    },
    "responses": {
        "200": {"description": "`{model, elapsed_ms, path, ok, mode, classes: [{index, label, score}]}` for an "
                               "image; `{model, elapsed_ms, rows: [...]}` for rows"},
        "400": {"description": "`{error}`: not an image, truncated, decompression bomb, malformed body"},
        "413": {"description": "`{error}`: over --max-upload-mb"},
        "422": {"description": "`{error}`: rows of the wrong width"},
    },
}


def _configure_logging() -> None:
    logger = logging.getLogger("pthkit.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s pthkit.serve %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _drain_then_stop(server: "ls.LitServer") -> None:
    """Stop the HTTP server processes (uvicorn finishes requests in flight), then let LitServe stop the rest."""
    http = [p for p in mp.active_children() if p.name.startswith("LitServer-")]
    for proc in http:
        if proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)  # uvicorn: stop accepting, finish in-flight requests, exit
    for proc in http:
        proc.join(GRACEFUL_SECONDS + 5)
    event = getattr(server, "_shutdown_event", None)  # LitServe's own "stop now" event (run() waits on it)
    if event is not None:
        event.set()


def serve(config: ServeConfig, served: ServedModel | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns 0 after a clean shutdown."""
    _configure_logging()
    server, served = build_server(config, served)
    stopping = threading.Event()
    main_pid = os.getpid()

    def on_signal(signum: int, _frame: Any) -> None:
        if os.getpid() != main_pid:
            # A process LitServe forked from this one (its queue manager; an HTTP server before uvicorn installs
            # its own handlers) received a signal sent to the whole group: the main process stops them in order.
            return
        if stopping.is_set():
            return
        stopping.set()
        log.info("received %s: finishing requests in flight, then stopping", signal.Signals(signum).name)
        if getattr(server, "_shutdown_event", None) is None:  # still starting: nothing is listening yet
            raise KeyboardInterrupt
        threading.Thread(target=_drain_then_stop, args=(server,), name="pthkit-serve-stop", daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("serving %s on http://%s:%d (batch <= %d, wait <= %g ms, %d worker(s), uploads <= %g MB)",
             served.architecture, _HOSTS[config.host], config.port, config.max_batch_size, config.batch_timeout_ms,
             config.workers, config.max_upload_mb)
    try:
        server.run(host=_HOSTS[config.host], port=config.port, log_level="warning", generate_client_file=False,
                   access_log=False, timeout_keep_alive=KEEP_ALIVE_SECONDS)
    except KeyboardInterrupt:
        return 130 if not stopping.is_set() else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
    return 0
