"""Property-based: ``scan_file``'s verdict on random pickle programs equals an independent reference's.

The programs mix data, allowlisted globals, dangerous and unknown globals, and stack noise (POP, POP_MARK, DUP, MARK,
MEMOIZE / BINPUT / BINGET, STACK_GLOBAL over strings that were pushed, popped, duplicated or memoized). The reference
below is written from the pickle spec on top of :func:`pickletools.genops` with its own full stack simulation and its
own allowlist; it shares no code with pthkit. "safe" if and only if only allowlisted globals are reachable; a
reachable dangerous global means "malicious-looking".
"""

from __future__ import annotations

import pickletools
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pthkit.checkpoint import scan_file

ALLOWED = [("collections", "OrderedDict"), ("builtins", "set"), ("torch._utils", "_rebuild_tensor_v2"),
           ("torch", "FloatStorage"), ("_codecs", "encode")]
DANGEROUS = [("posix", "system"), ("os", "system"), ("builtins", "eval"), ("builtins", "getattr"),
             ("subprocess", "Popen"), ("uuid", "_get_command_stdout"), ("pydoc", "locate"), ("operator", "attrgetter"),
             ("importlib", "import_module"), ("functools", "partial")]
UNKNOWN = [("argparse", "Namespace"), ("pathlib", "PosixPath"), ("mylib.models", "Net")]
REF_ALLOWED = {f"{m}.{n}" for m, n in ALLOWED}
REF_DANGEROUS = {f"{m}.{n}" for m, n in DANGEROUS}
WORDS = sorted({w for pair in ALLOWED + DANGEROUS + UNKNOWN for w in pair} | {"x", ""})

_DIR = Path(tempfile.mkdtemp(prefix="pthkit-fuzz-"))


# --- the independent reference -----------------------------------------------------------------------------------------


class _Obj:
    """Any non-string value on the reference's stack."""


def reference_verdict(data: bytes) -> str:
    """Simulate the stack of a pickle program opcode by opcode (``pickletools.genops`` only parses)."""
    stack: list[object] = []
    marks: list[int] = []
    memo: dict[int, object] = {}
    seen: list[str] = []
    stopped = False
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                stack.append(arg)
            elif name in ("BININT1", "BININT", "BININT2", "NONE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "NEWTRUE"):
                stack.append(_Obj())
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("TUPLE", "LIST"):
                k = marks.pop()
                del stack[k:]
                stack.append(_Obj())
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                k = marks.pop()
                del stack[k:]
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[int(arg)])
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                seen.append(f"{module}.{attr}")
                stack.append(_Obj())
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                if not (isinstance(module, str) and isinstance(attr, str)):
                    return "not-safe"  # unresolvable: torch stops here too
                seen.append(f"{module}.{attr}")
                stack.append(_Obj())
            elif name == "STOP":
                stopped = True
                break
            else:
                return "not-safe"  # an opcode this reference does not model
    except (ValueError, IndexError, KeyError):
        return "not-safe"
    if not stopped:
        return "not-safe"
    if any(g in REF_DANGEROUS for g in seen):
        return "malicious"
    return "safe" if all(g in REF_ALLOWED for g in seen) else "not-safe"


# --- the program generator ---------------------------------------------------------------------------------------------


def _u(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


ACTIONS = st.one_of(
    st.tuples(st.just("str"), st.sampled_from(WORDS)),
    st.tuples(st.just("int"), st.integers(0, 255)),
    st.tuples(st.just("none"), st.just(0)),
    st.tuples(st.just("empty"), st.sampled_from([b"]", b"}", b")"])),
    st.tuples(st.just("global"), st.sampled_from(ALLOWED + DANGEROUS + UNKNOWN)),
    st.tuples(st.just("stack_global_pair"), st.sampled_from(ALLOWED + DANGEROUS + UNKNOWN)),
    st.tuples(st.just("stack_global"), st.just(0)),
    st.tuples(st.just("pop"), st.just(0)),
    st.tuples(st.just("mark"), st.just(0)),
    st.tuples(st.just("pop_mark"), st.just(0)),
    st.tuples(st.just("close"), st.sampled_from([b"t", b"l"])),
    st.tuples(st.just("dup"), st.just(0)),
    st.tuples(st.just("memoize"), st.just(0)),
    st.tuples(st.just("put"), st.integers(0, 5)),
    st.tuples(st.just("get"), st.integers(0, 40)),
)


def build_program(actions: list[tuple[str, object]]) -> bytes:
    """Bytes of a pickle program that always parses: each action is applied only where the stack allows it."""
    depth = 0  # items above the innermost mark
    marks: list[int] = []
    memo_next = 0
    put_slots: set[int] = set()
    out = bytearray(b"\x80\x04")
    for kind, arg in actions:
        if kind == "str":
            out += _u(str(arg))
            depth += 1
        elif kind == "int":
            out += b"K" + bytes([int(arg)])  # type: ignore[call-overload]
            depth += 1
        elif kind == "none":
            out += b"N"
            depth += 1
        elif kind == "empty":
            out += arg  # type: ignore[operator]
            depth += 1
        elif kind == "global":
            module, name = arg  # type: ignore[misc]
            out += b"c" + f"{module}\n{name}\n".encode()
            depth += 1
        elif kind == "stack_global_pair":
            module, name = arg  # type: ignore[misc]
            out += _u(module) + _u(name) + b"\x93"
            depth += 1
        elif kind == "stack_global" and depth >= 2:
            out += b"\x93"  # over whatever is on top: strings or not
            depth -= 1
        elif kind == "pop" and depth >= 1:
            out += b"0"
            depth -= 1
        elif kind == "mark":
            out += b"("
            marks.append(depth)
            depth = 0
        elif kind == "pop_mark" and marks:
            out += b"1"
            depth = marks.pop()
        elif kind == "close" and marks:
            out += arg  # type: ignore[operator]
            depth = marks.pop() + 1
        elif kind == "dup" and depth >= 1:
            out += b"2"
            depth += 1
        elif kind == "memoize" and depth >= 1:
            out += b"\x94"
            memo_next += 1
        elif kind == "put" and depth >= 1:
            slot = 100 + int(arg)  # type: ignore[call-overload]
            out += b"q" + bytes([slot])
            put_slots.add(slot)
        elif kind == "get":
            slots = sorted(put_slots | set(range(memo_next)))
            if slots:
                out += b"h" + bytes([slots[int(arg) % len(slots)]])  # type: ignore[call-overload]
                depth += 1
    return bytes(out) + b"N."


def _check(actions: list[tuple[str, object]]) -> None:
    data = build_program(actions)
    expected = reference_verdict(data)
    path = _DIR / "p.pkl"
    path.write_bytes(data)
    got = scan_file(path).verdict
    if expected == "safe":
        assert got == "safe", (data, got)
    elif expected == "malicious":
        assert got == "malicious-looking", (data, got)
    else:
        assert got != "safe", (data, got)


def _decoy_program() -> bytes:
    return build_program([("str", "posix"), ("str", "system"), ("str", "collections"), ("str", "OrderedDict"),
                          ("pop", 0), ("pop", 0), ("stack_global", 0)])


def test_reference_sees_through_the_decoy():
    assert reference_verdict(_decoy_program()) == "malicious"
    assert reference_verdict(build_program([("stack_global_pair", ("collections", "OrderedDict"))])) == "safe"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.lists(ACTIONS, min_size=1, max_size=30))
def test_scan_agrees_with_reference(actions):
    _check(actions)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, min_size=1, max_size=80))
def test_scan_agrees_with_reference_long(actions):
    _check(actions)


def test_reference_models_the_frame_and_struct_free_subset():
    data = build_program([("mark", 0), ("str", "os"), ("str", "system"), ("close", b"t"), ("memoize", 0)])
    assert reference_verdict(data) == "safe"  # strings only, no global reached
    assert struct.calcsize("<Q") == 8
