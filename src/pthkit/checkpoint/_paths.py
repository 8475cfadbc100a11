"""Every path a user (or a shard index) names is checked here before it is opened: kind of file and size budget.

Why: ``open()`` on a FIFO blocks forever, ``/dev/zero`` reads without end, a name longer than the OS allows raises a
bare ``OSError``. :func:`check_input` turns each case into a typed one-line error before any byte is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Literal

from pthkit.errors import BudgetExceededError, CheckpointError, InputNotFoundError, UnsupportedFormatError

Kind = Literal["file", "dir"]


def _kind_name(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_input(path: str | os.PathLike, *, what: str = "weights file", limit: int | None = None,
                allow_dir: bool = True) -> tuple[Kind, int]:
    """``("file", size)`` or ``("dir", 0)`` for an existing regular file / folder; a typed error otherwise.

    ``limit`` bounds the size of a regular file (:class:`BudgetExceededError` beyond it).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError as err:
        raise InputNotFoundError.build(what, received=f"{p} (no such file)", expected="an existing file or folder") from err
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else type(err).__name__
        if err.errno == errno.ENAMETOOLONG:
            reason = "a name longer than the operating system allows"
        raise InputNotFoundError.build(
            what, received=f"a path that cannot be opened ({reason})", expected="an existing, readable file or folder",
        ) from err
    except ValueError as err:  # embedded NUL byte
        raise InputNotFoundError.build(what, received="a path with a NUL character", expected="a file path") from err
    if stat.S_ISDIR(st.st_mode):
        if not allow_dir:
            raise UnsupportedFormatError.build(what, received=f"{p.name} is a folder", expected="a regular file")
        return "dir", 0
    if not stat.S_ISREG(st.st_mode):
        raise UnsupportedFormatError.build(
            what, received=f"{p.name} is {_kind_name(st.st_mode)}", expected="a regular file",
            hint="Point at the weights file itself.",
        )
    if limit is not None and st.st_size > limit:
        raise BudgetExceededError.build(
            what, received=f"{p.name} of {st.st_size:,} bytes", expected=f"at most {limit:,} bytes",
            hint="This is not the kind of file expected here.",
        )
    return "file", st.st_size


def read_small(path: Path, *, what: str, limit: int) -> bytes:
    """The bytes of a small regular file (an index, a config), checked first and read with a hard limit."""
    check_input(path, what=what, limit=limit, allow_dir=False)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise CheckpointError.build(what, received=f"{path.name} unreadable ({os.strerror(err.errno or 0)})",
                                    expected="a readable file") from err
    if len(data) > limit:
        raise BudgetExceededError.build(what, received=f"{path.name} larger than {limit:,} bytes", expected="a small file")
    return data
