"""``pthkit serve``: an HTTP service for one model, with dynamic batching and a web page (built on LitServe).

- :func:`serve` / :func:`build_server` with a :class:`ServeConfig` (the CLI flags) and a :class:`ServePlan` (what to
  open: a weights file, a bundle …, through :func:`pthkit.open`).
- Endpoints: ``POST /predict``, ``GET /health``, ``GET /info``, ``GET /docs``, ``GET /`` (see
  :mod:`pthkit.serve.server`). Needs the ``serve`` extra: ``pip install 'pthkit[serve]'``.
"""

from __future__ import annotations

from pthkit.serve.model import ServedModel, ServePlan, open_served
from pthkit.serve.server import ServeConfig, build_server, serve, server_info

__all__ = ["ServeConfig", "ServePlan", "ServedModel", "build_server", "open_served", "serve", "server_info"]
