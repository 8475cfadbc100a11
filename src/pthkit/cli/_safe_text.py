"""``safe_text``: make text read from a file harmless to print on a terminal.

Tensor names, metadata, class names and error details come from files an attacker may write. Printed raw, an ESC / OSC
sequence can move the cursor, rewrite the "Safety" line the user reads, set the window title or plant a hyperlink;
bidi overrides can make ``evil`` read as ``live``. ``safe_text`` replaces every such character with a visible escape
(``\\x1b``, ``\\u202e``), so what is shown is what the file holds, never an instruction to the terminal.

Only human output goes through it; JSON output stays the exact data (JSON escapes C0 controls itself).
"""

from __future__ import annotations

import re

# C0 controls except tab/newline (kept: layout only), DEL, C1 controls (0x80-0x9f: CSI/OSC/ST on some terminals),
# bidi embeddings/overrides/isolates and marks, zero-width and line/paragraph separators, BOM, interlinear annotation.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)


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
