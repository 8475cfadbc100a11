"""Family 7, terminal escapes: text from files never reaches the terminal raw, from any command's human output.

Hostile inputs are built here: a safetensors file whose tensor names and ``__metadata__`` hold ESC[2K, an OSC 8
hyperlink, an OSC 0 title, BEL, a C1 CSI (U+009B), a bidi override (U+202E) and rich markup; pickle checkpoints whose
global names hold them; a labels file, image and class-folder names, a CSV's name and its label column, a bundle's
``config.json``. Every command runs on them in process (``main([...])``) and its stdout and stderr are checked:

- no C0 control but newline and tab, no DEL or C1 control (U+007F-U+009F), no bidi control, no lone surrogate;
- rich markup from the file shows as written (``[link=…]``, ``[/]``), never as a link or a style;
- the hostile text was shown (escaped, ``\\x1b``), so no case passes by printing nothing.

Characters are checked, not bytes: UTF-8 encodes every non-ASCII character (``→``, box lines) with bytes 0x80-0xBF,
and a UTF-8 terminal only acts on decoded characters. ``--json`` output must parse back to the exact data.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pickle
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from _train_data import TINY_ARCH, make_image_folder, make_tiny_weights  # noqa: E402

from pthkit.cli import main as main_mod  # noqa: E402
from pthkit.cli._output import console, err_console  # noqa: E402

HOSTILE_PY = Path(__file__).resolve().parents[1] / "checkpoint" / "hostile.py"

# Every family member at once: erase line, OSC 8 hyperlink, OSC 0 window title, BEL, C1 CSI, bidi override, markup.
MARKUP = ("[link=http://evil]x[/link]", "[/]")
NASTY = ("\x1b[2K\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\x1b]0;pwned\x07\x9b31m\u202eevil"
         + "".join(MARKUP))
# File and folder names cannot hold "/" (nor NUL): the same family without the closing tags.
FILE_MARKUP = "[red]"
FILE_NASTY = f"\x1b[2K\x1b]0;pwned\x07\x9b31m\u202e{FILE_MARKUP}f"

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_FORBIDDEN = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")


def forbidden(text: str) -> list[str]:
    """Each forbidden character in ``text`` with a little context, for the failure message."""
    return [repr(text[max(0, m.start() - 20):m.end() + 20]) for m in _FORBIDDEN.finditer(text)][:5]


# --- hostile inputs --------------------------------------------------------------------------------------------------


def _hostile_module() -> Any:
    spec = importlib.util.spec_from_file_location("pthkit_tests_hostile", HOSTILE_PY)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _nasty_class_pickle(obj_key: str) -> bytes:
    """A protocol-4 torch.save zip whose tensor names and one global (module and class name) are hostile."""
    module_name, class_name = f"evil{FILE_NASTY}mod", f"Cfg{FILE_NASTY}"
    module = types.ModuleType(module_name)
    cls = type(class_name, (), {"__module__": module_name, "__qualname__": class_name})
    setattr(module, class_name, cls)
    sys.modules[module_name] = module
    try:
        buf = io.BytesIO()
        torch.save({"state_dict": {f"{NASTY}.weight": torch.ones(2, 2), "fc.bias": torch.ones(2)}, obj_key: cls()},
                   buf, pickle_protocol=4)
        return buf.getvalue()
    finally:
        del sys.modules[module_name]


@dataclass
class Hostile:
    root: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return str(self.paths[key])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    from safetensors.torch import save_file

    hostile_mod = _hostile_module()
    root = tmp_path_factory.mktemp("escapes")
    h = Hostile(root)

    # Weights: a clean tiny model in a file with a hostile name; the same tensors with one hostile name, in a
    # safetensors file with hostile metadata (and name).
    weights = make_tiny_weights(root / f"tiny{FILE_NASTY}.pth")
    h.paths["weights"] = weights
    sd = torch.load(weights, weights_only=True)
    first = next(iter(sd))
    sd[f"{NASTY}.{first}"] = sd.pop(first)  # pthkit may map this one back by shape …
    sd[f"{NASTY}.extra"] = torch.ones(3)  # … but not this one: a strict load refuses the file and names it
    h.paths["st"] = root / f"names{FILE_NASTY}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(h.paths["st"]), metadata={"note": NASTY, NASTY: "v"})

    # Pickles: hostile global names (a class in a zip checkpoint; a "posix<nasty>.system" call in a raw pickle).
    h.paths["pkl"] = root / "cfg.pth"
    h.paths["pkl"].write_bytes(_nasty_class_pickle(NASTY))
    h.paths["evil"] = root / f"evil{FILE_NASTY}.pkl"
    h.paths["evil"].write_bytes(b"\x80\x04" + hostile_mod._u("posix" + NASTY) + hostile_mod._u("system" + NASTY)
                                + b"\x93" + hostile_mod._call_with("true"))
    h.paths["evil_zip"] = hostile_mod.zip_with_members(
        root / "evil_zip.pth", [(name, data) if not name.endswith("data.pkl") else (name, pickle.dumps(  # noqa: S301
            {"x": 1}, protocol=4)[:-1] + b"0" + hostile_mod._u("posix" + NASTY) + hostile_mod._u("system")
            + b"\x93" + hostile_mod._call_with("true"))
            for name, data in hostile_mod.torch_members({"fc.weight": torch.ones(2)})])

    # Labels, images (names), a broken image, a data folder with hostile class names.
    h.paths["labels"] = root / "labels.txt"
    h.paths["labels"].write_text("\n".join(f"{i}{NASTY}" for i in range(10)) + "\n")
    h.paths["data_labels"] = root / "data_labels.txt"  # the data folder's class names first, then the rest
    h.paths["data_labels"].write_text("\n".join([f"a{FILE_NASTY}", f"b{FILE_NASTY}", *(f"{i}{NASTY}" for i in range(8))]))
    h.paths["labels2"] = root / "labels2.txt"
    h.paths["labels2"].write_text("\n".join(f"{i}{NASTY}" for i in range(2)) + "\n")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}{FILE_NASTY}.png")
    (images / f"z{FILE_NASTY}.jpg").write_text("not a picture")
    # A name that is not UTF-8: a raw 0x9b byte (8-bit CSI), a lone surrogate in Python, raw again if printed as is.
    h.paths["raw_names"] = root / "raw_names"
    h.paths["raw_names"].mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
        h.paths["raw_names"] / os.fsdecode(b"raw\x9b.png"))
    h.paths["images"] = images
    h.paths["image"] = images / f"0{FILE_NASTY}.png"
    h.paths["data"] = make_image_folder(root / "data", per_class=2, size=32,
                                        classes=(f"a{FILE_NASTY}", f"b{FILE_NASTY}"))
    h.paths["one_class"] = make_image_folder(root / "one", per_class=2, size=32, classes=(f"a{FILE_NASTY}",))

    # A bundle whose config.json carries hostile values in every fact --explain shows.
    from pthkit.bundle import bundle_weights

    folder, _ = bundle_weights(str(weights), root / "bundle", arch=TINY_ARCH,
                               label_names=[f"{i}{NASTY}" for i in range(10)],
                               overrides={"size": 32, "mean": "imagenet", "std": "imagenet"})  # nothing to infer: fast
    config_path = Path(folder) / "config.json"
    config = json.loads(config_path.read_text())
    section = config["pthkit"]
    section.update(source_path=NASTY, head_change=NASTY, version=NASTY, note=NASTY,
                   training={"epochs": NASTY, "lr": NASTY, "batch_size": 1})
    config_path.write_text(json.dumps(config))
    h.paths["bundle"] = Path(folder)

    # Tables: a user module (explicit --arch), a CSV with a hostile name, a classification table with hostile labels.
    (root / "my_model.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass MyModel(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.layer1 = nn.Linear(4, 8)\n        self.layer2 = nn.Linear(8, 2)\n\n"
        "    def forward(self, x):\n        return self.layer2(torch.relu(self.layer1(x)))\n")
    h.paths["arch"] = Path(f"{root / 'my_model.py'}:MyModel")
    torch.manual_seed(0)
    torch.save({"layer1.weight": torch.randn(8, 4), "layer1.bias": torch.zeros(8), "layer2.weight": torch.randn(2, 8),
                "layer2.bias": torch.zeros(2)}, root / "table.pth")
    h.paths["table_weights"] = root / "table.pth"
    x = rng.normal(size=(6, 4))
    h.paths["rows"] = root / f"rows{FILE_NASTY}.csv"
    with open(h.paths["rows"], "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["f0", "f1", "f2", "f3", "label"])
        for i, row in enumerate(x):
            writer.writerow([*(f"{v:.5f}" for v in row), f"{i % 2}{NASTY}"])
    return h


# --- every command ---------------------------------------------------------------------------------------------------

ESC = "\\x1b"  # what an escaped ESC looks like on screen


@dataclass
class Case:
    argv: Callable[[Hostile, Path], list[str]]
    shows: tuple[str, ...] = (ESC,)  # must appear in stdout + stderr: the hostile text was shown, escaped
    setup: Callable[[pytest.MonkeyPatch], None] | None = None
    json_out: bool = False  # stdout is JSON (one document or JSON lines): must parse


def _unexpected(monkeypatch: pytest.MonkeyPatch) -> None:
    import pthkit.checkpoint

    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError(f"a bug {NASTY}")

    monkeypatch.setattr(pthkit.checkpoint, "read_checkpoint", boom)


def _warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    import pthkit.checkpoint

    def warns(*_: Any, **__: Any) -> None:
        warnings.warn(f"pthkit: {NASTY}", UserWarning, stacklevel=2)
        raise RuntimeError("stop here")

    # pytest records warnings; show them the way Python's default hook does (through warnings.formatwarning).
    monkeypatch.setattr(warnings, "showwarning", lambda message, category, filename, lineno, file=None, line=None:
                        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line)))
    monkeypatch.setattr(pthkit.checkpoint, "read_checkpoint", warns)


def _no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import pthkit.serve

    def refuse(*_: Any, **__: Any) -> int:
        raise AssertionError("serve must refuse the file before anything listens")

    monkeypatch.setattr(pthkit.serve, "serve", refuse)


PRED = ["--arch", TINY_ARCH, "--size", "32", "--mean", "imagenet", "--std", "imagenet"]

CASES: dict[str, Case] = {
    "inspect": Case(lambda h, t: ["inspect", h["st"], "--tensors"], (ESC, *MARKUP)),
    "inspect-tree": Case(lambda h, t: ["inspect", h["st"], "--depth", "2"], (ESC, *MARKUP)),
    "inspect-json": Case(lambda h, t: ["inspect", h["st"], "--json", "--tensors"], (), json_out=True),
    "inspect-pickle": Case(lambda h, t: ["inspect", h["pkl"]], (ESC, *MARKUP)),
    "inspect-evil": Case(lambda h, t: ["inspect", h["evil"]], (ESC,)),
    "inspect-bundle": Case(lambda h, t: ["inspect", h["bundle"]], ()),
    "scan": Case(lambda h, t: ["scan", h["st"], h["pkl"], h["evil"], h["evil_zip"]], (ESC, *MARKUP)),
    "scan-json": Case(lambda h, t: ["scan", h["evil"], h["pkl"], "--json"], (), json_out=True),
    "identify": Case(lambda h, t: ["identify", h["st"], "--arch", TINY_ARCH], (ESC, *MARKUP)),
    "identify-json": Case(lambda h, t: ["identify", h["st"], "--arch", TINY_ARCH, "--json"], (), json_out=True),
    "load": Case(lambda h, t: ["load", h["st"], "--arch", TINY_ARCH], (ESC, *MARKUP)),
    "load-partial": Case(lambda h, t: ["load", h["st"], "--arch", TINY_ARCH, "--partial"], (ESC, *MARKUP)),
    "load-json": Case(lambda h, t: ["load", h["st"], "--arch", TINY_ARCH, "--json"], (), json_out=True),
    "architectures": Case(lambda h, t: ["architectures", f"zz{NASTY}"], (ESC,)),
    "predict-table": Case(lambda h, t: ["predict", h["weights"], h["images"], h["raw_names"], *PRED,
                                        "--labels", h["labels"]], (ESC, FILE_MARKUP, *MARKUP, "raw\\udc9b.png")),
    "predict-explain": Case(lambda h, t: ["predict", h["bundle"], h["image"], "--explain"], (ESC, *MARKUP)),
    "predict-multi-label": Case(lambda h, t: ["predict", h["weights"], h["images"], *PRED, "--labels", h["labels"],
                                              "--multi-label", "--threshold", "0"], (ESC, *MARKUP)),
    "predict-csv": Case(lambda h, t: ["predict", h["weights"], h["images"], h["raw_names"], *PRED, "--labels",
                                      h["labels"], "--csv", "--explain"], (ESC, FILE_MARKUP, *MARKUP, "raw\\udc9b")),
    "predict-json-raw-names": Case(lambda h, t: ["predict", h["weights"], h["raw_names"], *PRED, "--json"],
                                   ("raw\\udc9b",), json_out=True),
    "predict-json": Case(lambda h, t: ["predict", h["weights"], h["images"], *PRED, "--labels", h["labels"],
                                       "--json", "--features", str(t / f"f{FILE_NASTY}.npy")],
                         (ESC, FILE_MARKUP), json_out=True),
    "predict-missing": Case(lambda h, t: ["predict", h["weights"], str(t / f"gone{FILE_NASTY}.png"), *PRED]),
    "predict-tables": Case(lambda h, t: ["predict", h["table_weights"], h["rows"], "--arch", str(h["arch"]),
                                         "--columns", "f0,f1,f2,f3", "--explain"], (ESC, FILE_MARKUP)),
    "predict-tables-csv": Case(lambda h, t: ["predict", h["table_weights"], h["rows"], "--arch", str(h["arch"]),
                                             "--columns", "f0,f1,f2,f3", "--csv"], (ESC, FILE_MARKUP)),
    "predict-tables-json": Case(lambda h, t: ["predict", h["table_weights"], h["rows"], "--arch", str(h["arch"]),
                                              "--columns", "f0,f1,f2,f3", "--json"], (), json_out=True),
    "predict-tables-classify": Case(lambda h, t: ["predict", h["table_weights"], h["rows"], "--arch", str(h["arch"]),
                                                  "--columns", "f0,f1,f2,f3", "--task", "classify",
                                                  "--labels", h["labels2"]], (ESC, *MARKUP)),
    "evaluate": Case(lambda h, t: ["evaluate", h["weights"], h["data"], *PRED, "--labels", h["data_labels"],
                                   "--workers", "0"], (ESC, FILE_MARKUP, *MARKUP)),
    "evaluate-tables": Case(lambda h, t: ["evaluate", h["table_weights"], h["rows"], "--arch", str(h["arch"]),
                                          "--target", "label", "--columns", "f0,f1,f2,f3", "--labels", h["labels2"]],
                            (ESC, *MARKUP)),
    "finetune-missing-data": Case(lambda h, t: ["finetune", h["weights"], str(t / f"gone{FILE_NASTY}"),
                                                "--out", str(t / "run"), "--arch", TINY_ARCH]),
    "finetune-one-class": Case(lambda h, t: ["finetune", h["weights"], h["one_class"], "--out", str(t / "run"),
                                             "--arch", TINY_ARCH, "--workers", "0"]),
    "bundle": Case(lambda h, t: ["bundle", h["weights"], "--out", str(t / f"b{FILE_NASTY}"), "--arch", TINY_ARCH,
                                 "--labels", h["labels"]], (ESC, FILE_MARKUP)),
    "bundle-refused": Case(lambda h, t: ["bundle", h["st"], "--out", str(t / "b"), "--arch", TINY_ARCH],
                           (ESC, *MARKUP)),
    "export-refused": Case(lambda h, t: ["export", h["st"], "--arch", TINY_ARCH, "--out", str(t / "m.onnx")],
                           (ESC, *MARKUP)),
    "serve-refused": Case(lambda h, t: ["serve", h["st"], "--arch", TINY_ARCH], (ESC, *MARKUP), setup=_no_server),
    "usage-error": Case(lambda h, t: ["inspect", h["st"], "--select", NASTY], (ESC, *MARKUP)),
    "unexpected-error": Case(lambda h, t: ["inspect", h["st"]], (ESC, *MARKUP), setup=_unexpected),
    "warning": Case(lambda h, t: ["inspect", h["st"]], (ESC, *MARKUP), setup=_warning),
}


@pytest.fixture(autouse=True)
def _wide_consoles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Rich wraps at 80 columns off a terminal: a wide console keeps each name on one line, so it can be searched.
    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(err_console, "width", 400)
    monkeypatch.delenv("PTHKIT_DEBUG", raising=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", list(CASES))
def test_no_terminal_control_from_any_command(name: str, hostile: Hostile, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    if case.setup is not None:
        case.setup(monkeypatch)
    argv = [str(a) for a in case.argv(hostile, tmp_path)]
    code = main_mod.main(argv)
    out, err = capsys.readouterr()
    both = out + err
    assert not forbidden(out), f"{name}: raw control in stdout: {forbidden(out)}"
    assert not forbidden(err), f"{name}: raw control in stderr: {forbidden(err)}"
    both.encode("utf-8")  # no lone surrogate either (checked above; this is what the terminal would get)
    if name not in ("unexpected-error", "warning"):
        assert "Error: unexpected" not in err and "Traceback" not in both, f"{name} (exit {code}): {err[-2000:]}"
    for shown in case.shows:
        assert shown in both, f"{name} (exit {code}): {shown!r} not shown; stdout {out[-1500:]!r} stderr {err[-1500:]!r}"
    if case.json_out:  # one JSON document, or JSON lines; either way the exact hostile text, escaped
        text = out.strip()
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            docs = [json.loads(line) for line in text.splitlines()]
        exact = (FILE_NASTY, NASTY, os.fsdecode(b"raw\x9b.png"))
        assert any(x in s for s in _strings(docs) for x in exact), f"{name}: the JSON lost the exact data"


def _strings(obj: Any) -> list[str]:
    """Every string (keys and values) in parsed JSON."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_json_keeps_the_exact_names(hostile: Hostile, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_mod.main(["inspect", hostile["st"], "--json", "--tensors"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["metadata"] == {"note": NASTY, NASTY: "v"}  # the exact data …
    assert f"{NASTY}.extra" in data["tensors"]
    assert not forbidden(out) and "\\u009b" in out and "\\u202e" in out and "\\u001b" in out  # … as JSON escapes


def test_forced_terminal_writes_only_our_colours(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a colour terminal the only escape sequences written are rich's SGR colours: no OSC (title, hyperlink)."""
    from pthkit.cli import read_cmds
    from pthkit.cli._output import SafeConsole

    out, err = io.StringIO(), io.StringIO()
    fake = SafeConsole(file=out, force_terminal=True, color_system="truecolor", width=300, highlight=False,
                       emoji=False)
    fake_err = SafeConsole(file=err, force_terminal=True, color_system="truecolor", width=300, highlight=False,
                           emoji=False)
    monkeypatch.setattr(read_cmds, "console", fake)
    monkeypatch.setattr("pthkit.cli._output.err_console", fake_err)
    main_mod.main(["inspect", hostile["st"], "--tensors"])
    main_mod.main(["scan", hostile["evil"], hostile["pkl"]])
    text = out.getvalue() + err.getvalue()
    assert "\x1b[" in text  # colours were written (a terminal)
    foreign = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert not forbidden(foreign), forbidden(foreign)
    assert "[link=http://evil]x[/link]" in foreign and ESC in foreign


def test_the_consoles_are_the_last_line_of_defence() -> None:
    """A call site that forgets to escape still writes no control sequence: no OSC 8 link from markup, no raw ESC from
    a ``Text`` or a string, and markup that does not parse (``[/]``) prints as written instead of raising."""
    from rich.table import Table
    from rich.text import Text

    from pthkit.cli._output import SafeConsole

    buffer = io.StringIO()
    fake = SafeConsole(file=buffer, force_terminal=True, color_system="truecolor", width=120, highlight=False)
    fake.print("[link=http://evil]click[/link] [bold]here[/bold]")  # markup that parses: the link is dropped
    fake.print(NASTY)  # not escaped, and "[/]" has nothing to close: printed as written
    fake.print(Text(NASTY, style="bold"), Text.assemble(("a\x1bb", "red"), ("c\u202ed", "blue")))
    table = Table("name")
    table.add_row(Text(NASTY))
    table.add_row(NASTY)
    fake.print(table)
    fake.log(NASTY)
    text = buffer.getvalue()
    foreign = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert not forbidden(foreign), forbidden(foreign)
    assert "\x1b]8" not in text and "click here" in foreign and "a\\x1bb" in foreign and "c\\u202ed" in foreign
    assert "[link=http://evil]x[/link][/]" in foreign


def test_server_log_lines_are_escaped() -> None:
    """``pthkit serve`` logs request paths a client chose (percent-decoded: ESC is one ``%1b`` away)."""
    import logging

    from pthkit.cli._output import SafeLogFilter, safe_logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = safe_logger("pthkit.tests.escapes")
    safe_logger("pthkit.tests.escapes")  # added once
    assert sum(isinstance(f, SafeLogFilter) for f in logger.filters) == 1
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info('%s "%s %s" %s', "127.0.0.1", "GET", f"/{NASTY}", 404)
        try:
            raise ValueError(NASTY)
        except ValueError:
            logger.exception("failed for %s", NASTY)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert not forbidden(text), forbidden(text)
    assert text.count(ESC) >= 3 and "ValueError" in text
