"""``pthkit serve MODEL``: an HTTP service for one model (dynamic batching, health, info, a web page).

Thin over :func:`pthkit.serve.serve`; the serve package (and torch, LitServe) is imported inside the command so
``pthkit --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pthkit.cli._options import ArchKwargsOpt, ArchOpt, DeviceOpt, TrustOpt

__all__ = ["register"]


def serve_command(
    model: Annotated[str, typer.Argument(help="Weights file, pthkit bundle folder, or anything pthkit.open takes.")],
    host: Annotated[str, typer.Option("--host", help="127.0.0.1 (this machine only), 0.0.0.0 or :: (all interfaces).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (1024-65535).")] = 8000,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names: one per line, or a JSON list.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Inference backend: torch (default), or one pthkit.open knows (onnxruntime, openvino).")] = "torch",
    device: DeviceOpt = "auto",
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, max=1024, help="Most requests run together in one forward pass (1 = no batching).")] = 32,
    batch_timeout_ms: Annotated[float, typer.Option("--batch-timeout-ms", min=0.0, max=10000.0, help="Longest wait for a batch to fill, in milliseconds.")] = 10.0,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Inference worker processes, each with its own copy of the model.")] = 1,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, max=2048.0, help="Largest upload accepted (larger: 413).")] = 20.0,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, max=256, help="Intra-op threads per worker (default: the cores other processes leave free at start).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=1000, help="Classes per answer when the request does not say.")] = 5,
    trust: TrustOpt = False,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /info, GET /docs and a web page at GET /."""
    from pthkit.architectures.user_code import parse_arch_kwargs
    from pthkit.cli._output import err_console, literal, safe_logger, warn
    from pthkit.serve import ServeConfig, ServePlan, open_served, serve

    label_names = None
    if labels is not None:
        from pthkit.labels import load_labels

        label_names = load_labels(labels)
    plan = ServePlan(source=model, arch=arch, arch_kwargs=parse_arch_kwargs(arch_kwargs) or None, trust=trust,
                     device=device, backend=backend, labels=label_names, threads=threads)
    config = ServeConfig(plan=plan, host=host, port=port, max_batch_size=max_batch_size,
                         batch_timeout_ms=batch_timeout_ms, workers=workers, max_upload_mb=max_upload_mb,
                         default_top_k=top_k).validate()
    served = open_served(plan)  # refuses an unsafe or unreadable file here, before anything listens
    err_console.print(f"[bold]pthkit serve[/bold]: {literal(served.model.summary_line())}")
    for message in served.model.warnings:
        warn(message)
    safe_logger("pthkit.serve")  # request paths and errors in the server's log: control characters escaped
    raise typer.Exit(serve(config, served))


def register(app: typer.Typer) -> None:
    """Add ``pthkit serve`` to the app."""
    app.command("serve", no_args_is_help=True)(serve_command)
