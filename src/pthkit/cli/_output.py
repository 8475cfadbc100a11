"""Output helpers shared by every command: human (rich), JSON, quiet.

Commands build a plain ``dict``/``list`` (from the API objects' ``to_dict()``) and either print it as JSON or render it
with rich. Keep rendering here or in the command module, never in the API.

Text read from files (tensor and class names, metadata, file names, error details) must never reach the terminal as
control sequences, nor as rich markup. Two layers, so that a new call site cannot forget:

- :class:`SafeConsole` (``console``, ``err_console``) runs :func:`~pthkit.cli._safe_text.safe_text` on every string it
  renders and on every segment it outputs, and drops hyperlinks: whatever a command prints, no ESC / OSC / C1 / bidi
  character and no OSC 8 link is written. Our own markup holds no control characters, so this changes nothing else.
  A string whose markup does not parse is printed as written instead of raising.
- :func:`literal` (``rich.markup.escape`` of the sanitized text) at each site that puts file text into a markup
  string, so ``[link=…]`` or ``[/]`` in a name prints as written. Or print such text with ``markup=False``.

JSON (:func:`dumps`) stays the exact data with unsafe characters as ``\\uXXXX`` escapes; CSV goes through
:func:`safe_stream` (CSV has no escapes: control characters are shown as ``\\x1b``, as in human output).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import IO, Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

from pthkit.cli._safe_text import has_unsafe, json_safe, safe_text

__all__ = ["SafeConsole", "SafeLogFilter", "console", "dumps", "err_console", "literal", "print_json", "safe_logger",
           "safe_stream", "warn"]


class SafeConsole(Console):
    """A rich ``Console`` that cannot write a terminal control sequence taken from text (defence in depth).

    Strings are sanitized before markup parsing and measuring (:meth:`render_str`, so tables keep their widths);
    every rendered text segment is sanitized again (``Text`` objects, pretty-printed values, anything else) and loses
    any hyperlink. Rich's own control segments (cursor moves of progress bars) pass unchanged.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        from rich.errors import MarkupError

        clean = safe_text(text)
        try:
            return super().render_str(clean, **kwargs)
        except MarkupError:  # file text put into markup unescaped ("[/]" in a name): show it as written, never crash
            return super().render_str(clean, **{**kwargs, "markup": False})

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        if isinstance(renderable, Text) and has_unsafe(renderable.plain):
            renderable = _safe_rich_text(renderable)  # before it wraps, so the escapes are laid out, not cropped
        for segment in super().render(renderable, options):
            if segment.control is None:
                text, style = segment.text, segment.style
                if has_unsafe(text) or (style is not None and style.link):
                    segment = Segment(safe_text(text), style.update_link(None) if style is not None else None)
            yield segment


def _safe_rich_text(text: Text) -> Text:
    """A copy of ``text`` with :func:`safe_text` applied and its styled spans moved along with the characters."""
    from bisect import bisect_left

    from rich.text import Span

    plain = text.plain
    starts: list[int] = []  # index of each escaped character in the old text
    shifts: list[int] = []  # extra characters its escape adds
    pieces: list[str] = []
    last = 0
    for index, char in enumerate(plain):
        escaped = safe_text(char)
        if escaped != char:
            pieces += [plain[last:index], escaped]
            last = index + 1
            starts.append(index)
            shifts.append((shifts[-1] if shifts else 0) + len(escaped) - 1)
    pieces.append(plain[last:])

    def moved(offset: int) -> int:
        before = bisect_left(starts, offset)  # escapes that start before ``offset``
        return offset + (shifts[before - 1] if before else 0)

    copy = text.copy()
    copy.plain = "".join(pieces)
    copy.spans = [Span(moved(span.start), moved(span.end), span.style) for span in text.spans]
    return copy


console = SafeConsole(highlight=False, soft_wrap=False, emoji=False)
err_console = SafeConsole(stderr=True, highlight=False, emoji=False)


def literal(text: object, *, newlines: bool = False) -> str:
    """File-derived ``text`` ready to put into a rich markup string: controls escaped, markup shown as written.

    ``newlines=False`` (names, table cells, one-line messages) also shows tab and newline as ``\\t`` / ``\\n``.
    """
    from rich.markup import escape

    return escape(safe_text(text, newlines=newlines))


class _SafeStream:
    """A text stream that writes through :func:`safe_text` (newlines kept): for CSV and plain lines on a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(safe_text(text))

    def flush(self) -> None:
        self._stream.flush()


def safe_stream(stream: IO[str]) -> Any:
    """``stream`` wrapped so that whatever is written to it has every control character shown as an escape."""
    return _SafeStream(stream)


class SafeLogFilter(logging.Filter):
    """Escapes control characters in a logger's records (message and traceback), e.g. request paths a client sent.

    A filter on the logger itself, so it also holds in processes forked after it was added, whatever their handlers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report, as without the filter
            return True
        record.msg = safe_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = safe_text(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = safe_text(record.stack_info)
        return True


def safe_logger(name: str) -> logging.Logger:
    """The logger ``name`` with a :class:`SafeLogFilter` on it (added once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, SafeLogFilter) for f in logger.filters):
        logger.addFilter(SafeLogFilter())
    return logger


def _default(obj: Any) -> Any:
    # Paths, tuples of tensors' shapes, numpy scalars, enums: anything reasonable becomes JSON.
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except Exception:  # noqa: BLE001
            pass
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """JSON text for ``obj``; unknown objects become strings, never a crash.

    Exact data; DEL, C1, bidi and other unsafe characters are written as ``\\uXXXX`` escapes (``json.dumps`` leaves
    them raw with ``ensure_ascii=False``), so ``--json | cat`` on a terminal is safe too. Other non-ASCII stays
    readable.
    """
    return json_safe(json.dumps(obj, indent=indent, default=_default, ensure_ascii=False))


def print_json(obj: Any, *, indent: int | None = 2) -> None:
    """Print ``obj`` as JSON to stdout (plain, no rich markup, so it can be piped)."""
    sys.stdout.write(dumps(obj, indent=indent) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """A one-line warning on stderr (never wrapped; the message is plain text, not rich markup)."""
    err_console.print(f"[yellow]Warning:[/yellow] {literal(message)}", markup=True, soft_wrap=True)
