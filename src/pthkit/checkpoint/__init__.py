"""Reading weights files safely: :func:`read_checkpoint`, :func:`scan_file`, :func:`detect_format`.

No code from a file runs unless ``trust=True`` is passed; see :mod:`pthkit.checkpoint.reader` for the paths taken
per format and :mod:`pthkit.checkpoint._policy` for what counts as safe.
"""

from __future__ import annotations

from pthkit.checkpoint.detect import detect_format
from pthkit.checkpoint.reader import read_checkpoint
from pthkit.checkpoint.scan import scan_file
from pthkit.checkpoint.types import Checkpoint, CheckpointFormat, Finding, ScanReport, Severity, Verdict

__all__ = [
    "read_checkpoint",
    "scan_file",
    "detect_format",
    "Checkpoint",
    "CheckpointFormat",
    "Finding",
    "ScanReport",
    "Severity",
    "Verdict",
]
