"""``safe_text``: make text read from a file harmless to print on a terminal.

Tensor names, metadata, class names and error details come from files an attacker may write. Printed raw, an ESC / OSC
sequence can move the cursor, rewrite the "Safety" line the user reads, set the window title or plant a hyperlink;
bidi overrides can make ``evil`` read as ``live``. ``safe_text`` replaces every such character with a visible escape
(``\\x1b``, ``\\u202e``), so what is shown is what the file holds, never an instruction to the terminal.

Human output goes through it (the CLI's rich consoles apply it to every string they render, see
:mod:`pthkit.cli._output`). JSON output stays the exact data: :func:`json_safe` writes the same characters as JSON
``\\uXXXX`` escapes (``json.dumps`` escapes C0 controls itself, but not DEL, C1 controls or bidi overrides, which
``pthkit … --json | cat`` would send to the terminal). CSV has no escape syntax, so CSV output shows them the way
human output does (``\\x1b``); ``--json`` is the format that keeps the exact bytes.

This module is the one place that defines which characters are unsafe.
"""

from __future__ import annotations

import re

# C0 controls except tab/newline (kept: layout only), DEL, C1 controls (0x80-0x9f: CSI/OSC/ST on some terminals),
# bidi embeddings/overrides/isolates and marks, zero-width and line/paragraph separators, BOM, interlinear annotation,
# and lone surrogates (an undecodable byte of a file name, e.g. 0x9b, that stdout's surrogateescape would write back raw).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff"
    "\ufeff\ufff9-\ufffb]"
)


def has_unsafe(text: str) -> bool:
    """True when ``text`` holds a character :func:`safe_text` would escape (a fast check before copying)."""
    return _UNSAFE.search(text) is not None


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(s: object, *, newlines: bool = True) -> str:
    """``s`` as text with every terminal control character shown as an escape (``\\x1b``, ``\\u202e`` …).

    ``newlines=False`` also escapes tab and newline, for values that must stay on one line (names, table cells).
    """
    text = s if isinstance(s, str) else str(s)
    out = _UNSAFE.sub(_escape, text)
    if not newlines:
        out = out.replace("\t", "\\t").replace("\n", "\\n")
    return out


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_safe(json_text: str) -> str:
    """JSON text with every unsafe character written as a ``\\uXXXX`` escape: the same data, nothing raw.

    Correct on the output of ``json.dumps``: its structure is ASCII with ``\\n`` and spaces only (kept), so any
    unsafe character left lies inside a string literal, where ``\\uXXXX`` is an exact JSON escape of it.
    """
    return _UNSAFE.sub(_json_escape, json_text)
