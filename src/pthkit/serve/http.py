"""The HTTP side of ``pthkit serve``, in the API server process: the request gate, the page and ``/info``.

:class:`RequestGate` is a pure ASGI middleware in front of LitServe's ``POST /predict``. LitServe answers a body
that is not JSON with a 500 and fails a whole batch when one request of it is bad, so every check that does not need
the model runs here, before the request reaches a worker:

- the body is read with a budget: over ``--max-upload-mb`` → 413 (``Content-Length`` is checked first);
- a multipart upload (field ``file``) or JSON ``{"image": "<base64>"}`` / ``{"inputs": [[...], ...]}`` is parsed;
  a malformed envelope, bad base64, an empty file or a bad ``top_k`` → 400; rows of the wrong width → 422;
- the request is re-encoded into one canonical JSON form (see :mod:`pthkit.serve.api`) with its arrival time, so
  ``elapsed_ms`` covers queueing and batching too.

Image decoding (not an image, truncated, decompression bomb → 400) happens in the worker, with ``pthkit predict``'s
decoder. Every request, whatever its path, gets one log line.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pthkit.serve.model import check_rows

__all__ = ["RequestGate", "MAX_TOP_K", "page_html"]

log = logging.getLogger("pthkit.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_TOP_K = 1000
# Slack over the upload limit for the envelope: multipart headers, JSON keys, base64's 4/3.
_ENVELOPE_SLACK = 64 * 1024
# A body over the limit is read and dropped up to this many times the limit (so the client reads the 413 instead of
# a reset connection); beyond that the connection is closed.
_DRAIN_FACTOR = 4


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestGate:
    """ASGI middleware: budget, parse and check ``POST /predict`` bodies; log one line per request."""

    def __init__(
        self, app: ASGIApp, *, max_upload_bytes: int, image_model: bool, row_width: int | None,
        default_top_k: int = 5, predict_path: str = "/predict",
    ) -> None:
        self.app = app
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_body_bytes = (self.max_upload_bytes * 4) // 3 + _ENVELOPE_SLACK
        self.image_model = image_model
        self.row_width = row_width
        self.default_top_k = default_top_k
        self.predict_path = predict_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        state: dict[str, Any] = {"status": 0, "bytes_in": 0, "note": ""}

        async def send_logged(message: Message) -> None:
            if message.get("type") == "http.response.start":
                state["status"] = int(message.get("status", 0))
            await send(message)

        try:
            if scope.get("path") == self.predict_path and scope.get("method") == "POST":
                try:
                    body = await self._canonical_body(scope, receive, t0, state)
                except _Reject as reject:
                    state["note"] = reject.message
                    await _send_json(send_logged, reject.status, {"error": reject.message})
                    return
                await self.app(_with_json_headers(scope, len(body)), _replay(body, receive), send_logged)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            client = scope.get("client") or ("-", 0)
            ms = (time.monotonic() - t0) * 1000.0
            note = f" error={state['note'][:160]!r}" if state["note"] else ""
            log.info('%s "%s %s" %s %.1fms in=%dB%s', client[0], scope.get("method"), scope.get("path"),
                     state["status"] or "-", ms, state["bytes_in"], note)

    # --- the request body -------------------------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, receive: Receive, state: dict[str, Any]) -> bytes:
        declared = _content_length(scope)
        too_large = _Reject(413, f"request body over the upload limit of {self.max_upload_bytes / 2**20:g} MB "
                                 "(--max-upload-mb)")
        if declared is not None and declared > self.max_body_bytes * _DRAIN_FACTOR:
            raise too_large
        chunks: list[bytes] = []
        total = 0
        over = declared is not None and declared > self.max_body_bytes
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                raise _Reject(400, "client disconnected before sending the whole body")
            chunk = message.get("body", b"") or b""
            total += len(chunk)
            state["bytes_in"] = total
            if total > self.max_body_bytes:
                over = True
                chunks.clear()
                if total > self.max_body_bytes * _DRAIN_FACTOR:
                    raise too_large
            elif not over:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if over:
            raise too_large
        return b"".join(chunks)

    async def _canonical_body(self, scope: Scope, receive: Receive, t0: float, state: dict[str, Any]) -> bytes:
        body = await self._read_body(scope, receive, state)
        content_type = _header(scope, b"content-type").lower()
        query_top_k = _query_param(scope, "top_k")
        if content_type.startswith("multipart/form-data"):
            data, name, form_top_k = await _parse_multipart(scope, body)
            return self._image_payload(data, name, form_top_k if form_top_k is not None else query_top_k, t0)
        try:
            obj = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _Reject(400, f"request body: not JSON and not a multipart upload ({err.__class__.__name__}: "
                               f"{' '.join(str(err).split())[:100]}); send a file in field 'file' or JSON") from None
        if not isinstance(obj, dict):
            raise _Reject(400, f"request body: expected a JSON object, got {type(obj).__name__}")
        top_k = obj.get("top_k", query_top_k)
        if "image" in obj:
            text = obj["image"]
            if not isinstance(text, str):
                raise _Reject(400, "image: expected a base64 string")
            if text.startswith("data:") and "," in text[:100]:  # a data URL: data:image/png;base64,....
                text = text.split(",", 1)[1]
            text = "".join(text.split())
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise _Reject(400, "image: not valid base64") from None
            return self._image_payload(data, str(obj.get("name") or "image"), top_k, t0)
        if "inputs" in obj:
            if self.image_model:
                raise _Reject(400, "inputs: this model takes images; send a file in field 'file' or "
                                   "{\"image\": \"<base64>\"}")
            rows, error, status = check_rows(obj["inputs"], self.row_width)
            if error is not None:
                raise _Reject(status, error)
            payload = {"kind": "rows", "inputs": rows, "top_k": self._top_k(top_k), "t0": t0}
            return json.dumps(payload).encode()
        raise _Reject(400, "request body: expected a field 'image' (base64) or 'inputs' (rows), "
                           "or a multipart upload in field 'file'")

    def _image_payload(self, data: bytes, name: str, top_k: Any, t0: float) -> bytes:
        if not self.image_model:
            raise _Reject(400, "this model takes rows of numbers, not images: send {\"inputs\": [[...], ...]}")
        if not data:
            raise _Reject(400, f"image {name!r}: empty file")
        if len(data) > self.max_upload_bytes:
            raise _Reject(413, f"image {name!r}: {len(data) / 2**20:.1f} MB, over the upload limit of "
                               f"{self.max_upload_bytes / 2**20:g} MB (--max-upload-mb)")
        payload = {"kind": "image", "image": base64.b64encode(data).decode("ascii"), "name": name[:200],
                   "top_k": self._top_k(top_k), "t0": t0}
        return json.dumps(payload).encode()

    def _top_k(self, value: Any) -> int:
        if value is None:
            return self.default_top_k
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOP_K:
            raise _Reject(400, f"top_k: expected an integer from 1 to {MAX_TOP_K}, got {value!r}"[:200])
        return value


async def _parse_multipart(scope: Scope, body: bytes) -> tuple[bytes, str, str | None]:
    """``(file bytes, file name, top_k field)`` of a multipart upload (python-multipart, through Starlette)."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request(scope, receive)
    try:
        async with request.form(max_files=4, max_fields=32) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise _Reject(400, "multipart upload: expected the image in a file field named 'file'")
            data = await upload.read()
            name = upload.filename or "upload"
            top_k = form.get("top_k")
            return data, name, top_k if isinstance(top_k, str) else None
    except _Reject:
        raise
    except Exception as err:  # noqa: BLE001 - any parser failure is the client's malformed body
        raise _Reject(400, f"multipart upload: malformed ({' '.join(str(err).split())[:120]})") from None


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _content_length(scope: Scope) -> int | None:
    text = _header(scope, b"content-length").strip()
    return int(text) if text.isdigit() else None


def _query_param(scope: Scope, name: str) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(bytes(scope.get("query_string") or b"").decode("latin-1")).get(name)
    return values[0] if values else None


def _with_json_headers(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    new = dict(scope)
    new["headers"] = headers
    return new


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as the app expects

    return replay


async def _send_json(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def page_html() -> str:
    """The web page (``GET /``): one static file shipped with the package, no build step, no external assets."""
    from importlib.resources import files

    return (files("pthkit.serve") / "static" / "index.html").read_text(encoding="utf-8")
