"""The LitServe API: what one inference worker does with a batch of requests.

LitServe (``litserve.LitAPI``) calls, in the worker process: ``setup`` once, then per batch ``decode_request`` on
each request, ``batch``, ``predict``, ``unbatch`` and ``encode_response`` on each output. One exception anywhere in
that chain fails every request of the batch, so nothing here raises for a bad request: a request that cannot be
served becomes an error *value* that travels through the batch and is encoded as its own 400/422 response, while
the other requests of the batch are answered normally.

Requests arrive already checked by :class:`pthkit.serve.http.RequestGate` (size, envelope, row width) in the
canonical form ``{"kind": "image", "image": <base64>, "name", "top_k", "t0"}`` or ``{"kind": "rows", "inputs",
"top_k", "t0"}``. Images are written to a private temporary folder and predicted with
:meth:`pthkit.model.Model.predict` — the ``pthkit predict`` path (same decoder, reduced-size JPEG decoding,
batch-level normalization), so a served answer equals the command line's.
"""

# No ``from __future__ import annotations`` here: LitServe reads the annotations of ``decode_request`` and
# ``encode_response`` at run time to build the FastAPI route (``Request``: parse the body; ``Response``: no model).
import base64
import binascii
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import litserve as ls
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pthkit.serve.model import ImageResult, RowsResult, ServedModel, ServePlan, check_rows, open_in_worker

__all__ = ["PthkitAPI", "Item"]

log = logging.getLogger("pthkit.serve")

# Suffixes kept on the temporary file (the decoder sniffs content; the suffix only helps messages).
_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass
class Item:
    """One decoded request: an image (bytes) or feature rows, or the error that stops it."""

    kind: str
    top_k: int
    t0: float
    name: str = "upload"
    data: bytes = b""
    rows: list[list[float]] | None = None
    error: str | None = None
    status: int = 200


class PthkitAPI(ls.LitAPI):
    """Serve one pthkit model: ``POST /predict`` answers as one line of ``pthkit predict --json``."""

    def __init__(self, plan: ServePlan, *, max_batch_size: int = 32, batch_timeout: float = 0.01) -> None:
        with warnings.catch_warnings():  # LitServe warns when batch/unbatch exist and max_batch_size is 1
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.plan = plan
        self.served: ServedModel | None = None
        self.tmp: str | None = None
        self._busy = threading.Event()

    def __getstate__(self) -> dict[str, Any]:  # sent to the spawned worker: an Event does not pickle
        state = dict(self.__dict__)
        state.pop("_busy", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._busy = threading.Event()

    # --- worker start -----------------------------------------------------------------------------------------------

    def setup(self, device: str) -> None:
        """Open the model in this worker (no second identification), then run it once so the first request is warm.

        LitServe reports the worker ready (``/health`` 200, and the port opens) only after this returns.
        """
        from dataclasses import replace

        from PIL import Image

        if self.plan.threads is not None:
            import torch

            torch.set_num_threads(self.plan.threads)  # decided once by the server (see server._with_threads)
        # Decompression-bomb warnings are errors in this process for good, whatever threads do with catch_warnings.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        device_name = self.plan.device if self.plan.device != "auto" else str(device)
        self.served = open_in_worker(replace(self.plan, device=device_name))
        self.tmp = tempfile.mkdtemp(prefix="pthkit-serve-")
        _remove_on_exit(self.tmp, self._busy)
        self._warm_up()

    def _warm_up(self) -> None:
        import io

        from PIL import Image

        served = self._model()
        if served.is_image_model:
            buf = io.BytesIO()
            Image.new("RGB", (320, 240), (128, 96, 64)).save(buf, format="PNG")
            item = Item(kind="image", top_k=1, t0=time.monotonic(), name="warm-up.png", data=buf.getvalue())
        else:
            width = served.row_width or 1
            item = Item(kind="rows", top_k=1, t0=time.monotonic(), rows=[[0.0] * width])
        result = self.predict([item])[0]
        if isinstance(result, ImageResult) and result.error is not None:
            raise RuntimeError(f"warm-up prediction failed: {result.error}")

    def _model(self) -> ServedModel:
        if self.served is None:
            raise RuntimeError("the model is not loaded (setup did not run)")
        return self.served

    # --- per request ------------------------------------------------------------------------------------------------

    def decode_request(self, request: Request) -> Item:  # type: ignore[override]
        """The canonical request (see the module docstring) → :class:`Item`; never raises.

        The annotation is for LitServe (it parses the body of a ``Request`` in the HTTP process); what arrives here
        is the parsed JSON object.
        """
        t0 = time.monotonic()
        payload: Any = request
        if not isinstance(payload, dict):
            return Item(kind="invalid", top_k=1, t0=t0, error="request body: expected a JSON object", status=400)
        top_k = payload.get("top_k", 5)
        t0 = float(payload.get("t0", t0))
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            return Item(kind="invalid", top_k=1, t0=t0, error="top_k: expected an integer >= 1", status=400)
        kind = payload.get("kind")
        if kind == "image":
            try:
                data = base64.b64decode(str(payload.get("image", "")), validate=True)
            except (binascii.Error, ValueError):
                return Item(kind="image", top_k=top_k, t0=t0, error="image: not valid base64", status=400)
            return Item(kind="image", top_k=top_k, t0=t0, name=str(payload.get("name") or "upload")[:200], data=data)
        if kind == "rows":
            width = self._model().row_width
            rows, error, status = check_rows(payload.get("inputs"), width)
            if error is not None:
                return Item(kind="rows", top_k=top_k, t0=t0, error=error, status=status)
            return Item(kind="rows", top_k=top_k, t0=t0, rows=rows)
        return Item(kind="invalid", top_k=top_k, t0=t0, error="request: expected an image or rows", status=400)

    def batch(self, inputs: list[Item]) -> list[Item]:  # type: ignore[override]
        return list(inputs)

    def predict(self, x: Item | list[Item], **kwargs: Any) -> list[Any] | Any:  # type: ignore[override]
        """Answer every item of the batch; the images in one forward pass, the rows in another."""
        self._busy.set()
        try:
            return self._predict(x)
        finally:
            self._busy.clear()

    def _predict(self, x: Item | list[Item]) -> list[Any] | Any:
        single = not isinstance(x, list)
        items: list[Item] = [x] if isinstance(x, Item) else list(x)
        results: list[Any] = [None] * len(items)
        for i, item in enumerate(items):
            if item.error is not None:
                results[i] = (item, ImageResult(error=item.error, status=item.status))
        images = [i for i, it in enumerate(items) if it.error is None and it.kind == "image"]
        rows = [i for i, it in enumerate(items) if it.error is None and it.kind == "rows"]
        if images:
            for i, result in zip(images, self._predict_images([items[i] for i in images])):
                results[i] = (items[i], result)
        if rows:
            for i, answer in zip(rows, self._predict_rows([items[i] for i in rows])):
                results[i] = (items[i], answer)
        return results[0] if single else results

    def _predict_images(self, items: list[Item]) -> list[ImageResult]:
        served = self._model()
        assert self.tmp is not None
        paths: list[str] = []
        for item in items:
            suffix = os.path.splitext(item.name)[1].lower()
            path = os.path.join(self.tmp, uuid.uuid4().hex + (suffix if suffix in _SUFFIXES else ".img"))
            with open(path, "wb") as fh:
                fh.write(item.data)
            paths.append(path)
        try:
            k = max(item.top_k for item in items)
            predictions = served.predict_images(paths, top_k=k)
        except Exception as err:  # noqa: BLE001 - one failing batch must answer every request, not hang them
            log.exception("prediction failed for a batch of %d images", len(items))
            message = f"prediction failed: {type(err).__name__}: {' '.join(str(err).split())}"
            return [ImageResult(error=message, status=500) for _ in items]
        finally:
            for path in paths:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        out: list[ImageResult] = []
        for item, path, p in zip(items, paths, predictions):
            if p.error is not None:
                out.append(ImageResult(error=p.error.replace(path, repr(item.name)), status=400))
                continue
            row = p.to_dict()
            row["path"] = item.name
            row["classes"] = row.get("classes", [])[: item.top_k]
            out.append(ImageResult(row=row))
        return out

    def _predict_rows(self, items: list[Item]) -> list[RowsResult | ImageResult]:
        served = self._model()
        all_rows = [row for item in items for row in (item.rows or [])]
        try:
            answers = served.predict_rows(all_rows, top_k=max(item.top_k for item in items))
        except Exception as err:  # noqa: BLE001 - see _predict_images
            log.exception("prediction failed for a batch of %d rows", len(all_rows))
            message = f"prediction failed: {type(err).__name__}: {' '.join(str(err).split())}"
            return [ImageResult(error=message, status=500) for _ in items]
        out: list[RowsResult | ImageResult] = []
        start = 0
        for item in items:
            n = len(item.rows or [])
            chunk = answers[start:start + n]
            for row in chunk:
                if isinstance(row.get("classes"), list):
                    row["classes"] = row["classes"][: item.top_k]
            out.append(RowsResult(rows=chunk))
            start += n
        return out

    def unbatch(self, output: list[Any]) -> list[Any]:  # type: ignore[override]
        return list(output)

    def encode_response(self, output: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        """``(item, result)`` → a JSON response with the request's own status (encoded here: never raises)."""
        item, result = output
        elapsed = round((time.monotonic() - item.t0) * 1000.0, 2)
        if isinstance(result, ImageResult) and result.error is not None:
            return JSONResponse({"error": result.error}, status_code=result.status)
        body: dict[str, Any] = {"model": self._model().architecture, "elapsed_ms": elapsed}
        if isinstance(result, RowsResult):
            body["rows"] = result.rows
        elif isinstance(result, ImageResult) and result.row is not None:
            body.update(result.row)
        return JSONResponse(body)



def _remove_on_exit(folder: str, busy: threading.Event) -> None:
    """Remove the worker's temporary folder when the worker ends: normally, or by SIGTERM.

    LitServe stops a worker with SIGTERM once the HTTP side has drained (see :mod:`pthkit.serve.server`); a SIGTERM
    that reaches the whole process group earlier (``kill -- -PGID``, systemd) lets the batch being computed finish
    and be handed back before the worker exits.
    """
    import atexit
    import signal

    def remove() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def exit_when_idle() -> None:
        while busy.is_set():
            time.sleep(0.01)
        time.sleep(0.25)  # the loop encodes and hands back the batch after predict returns
        remove()
        os._exit(0)

    def on_term(_signum: int, _frame: Any) -> None:
        if busy.is_set():
            threading.Thread(target=exit_when_idle, daemon=True).start()
            return
        remove()
        os._exit(0)

    atexit.register(remove)
    signal.signal(signal.SIGTERM, on_term)
