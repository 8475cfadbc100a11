"""``pthkit inspect`` and ``pthkit scan``: read a weights file safely and show what it holds / whether it is safe.

Thin over :mod:`pthkit.checkpoint` (reading, scanning) and :mod:`pthkit.summary` (counts, tree, head); this module
only renders. torch is imported inside the command bodies, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pthkit.cli._options import JsonOpt, NoStripPrefixOpt, SelectOpt, TrustOpt
from pthkit.cli._output import console, literal, print_json, warn
from pthkit.cli._safe_text import safe_text

if TYPE_CHECKING:
    from pthkit.checkpoint.types import Checkpoint
    from pthkit.summary import ModuleNode, Summary

__all__ = ["register", "inspect_command", "scan_command"]

VERDICT_STYLE = {
    "safe": "green",
    "needs-trust": "yellow",
    "malicious-looking": "bold red",
    "unreadable": "red",
}
VERDICT_TEXT = {
    "safe": "safe: tensors and plain data only; nothing from the file ran",
    "needs-trust": "needs trust: the file names code (classes, TorchScript) that pthkit did not run",
    "malicious-looking": "MALICIOUS-LOOKING: the file tries to call code that has no business in a weights file",
}
MAX_ENTRY_LINES = 20  # other entries shown by the human view; --json has them all
SEVERITY_STYLE = {"info": "dim", "warning": "yellow", "danger": "bold red"}


def escape(text: object) -> str:
    """Rich-markup-escaped text with every terminal control character shown as an escape (text read from files)."""
    return literal(text)


def register(app: typer.Typer) -> None:
    """Add ``inspect`` and ``scan`` to the app."""
    app.command("inspect")(inspect_command)
    app.command("scan")(scan_command)


# --- inspect ---------------------------------------------------------------------------------------------------------


def inspect_command(
    file: Annotated[Path, typer.Argument(help="Weights file (.pth/.pt/.bin/.ckpt/.safetensors), sharded index or folder.")],
    json: JsonOpt = False,
    tensors: Annotated[bool, typer.Option("--tensors", help="List every tensor (name, shape, dtype).")] = False,
    trust: TrustOpt = False,
    select: SelectOpt = "auto",
    no_strip_prefix: NoStripPrefixOpt = False,
    depth: Annotated[
        int | None, typer.Option("--depth", min=1, help="Show the module tree only this many levels deep.")
    ] = None,
) -> None:
    """Show what a weights file holds: format, safety, where the weights are, parameters, module tree, likely head.

    Nothing from the file runs unless --trust is given.
    """
    from pthkit.checkpoint import read_checkpoint
    from pthkit.summary import summarize

    if trust:
        warn(f"--trust: code inside {safe_text(file, newlines=False)} may run while reading it (full unpickling / TorchScript).")
    ckpt = read_checkpoint(file, trust=trust, select=select, strip_prefix=not no_strip_prefix, allow_meta=True)
    summary = summarize(ckpt)
    if json:
        data = ckpt.to_dict()
        if not tensors:
            data.pop("tensors", None)
        data["summary"] = summary.to_dict()
        print_json(data)
        return
    _render_inspect(ckpt, summary, depth=depth)
    if tensors:
        _render_tensor_table(ckpt, summary)


def _where(ckpt: "Checkpoint") -> str:
    if not ckpt.tensors:
        return "no weights found in the file"
    where = "found at " + (" → ".join(ckpt.source) if ckpt.source else "the top level of the file")
    if ckpt.prefixes_removed:
        where += "; prefixes removed: " + ", ".join(repr(p) for p in ckpt.prefixes_removed)
    return where


def _render_inspect(ckpt: "Checkpoint", summary: "Summary", *, depth: int | None) -> None:
    from rich.table import Table
    from rich.tree import Tree

    from pthkit.summary import format_bytes

    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column(overflow="fold")
    verdict_style = VERDICT_STYLE.get(ckpt.verdict, "")
    info.add_row("File", escape(f"{ckpt.path} ({format_bytes(ckpt.file_size)})"))
    info.add_row("Format", escape(str(ckpt.format)))
    info.add_row("Safety", f"[{verdict_style}]{escape(VERDICT_TEXT.get(ckpt.verdict, ckpt.verdict))}[/]")
    info.add_row("Weights", escape(_where(ckpt)))
    dtypes = ", ".join(f"{d} {n}" for d, n in summary.tensors_by_dtype.items())
    info.add_row("Tensors", escape(f"{summary.tensors} ({dtypes})" if dtypes else "0"))
    extra = f"{summary.values:,} values counting buffers"
    if summary.counters:
        extra += f"; {summary.counters} step counters not counted"
    info.add_row("Parameters", escape(f"{summary.parameters:,} ({extra})"))
    info.add_row(
        "Bytes",
        escape(", ".join(f"{d} {format_bytes(b)}" for d, b in summary.bytes_by_dtype.items()) or "0"),
    )
    if summary.head:
        head = summary.head
        info.add_row(
            "Likely head",
            escape(f"{head} ({head.confidence} confidence: {'; '.join(head.evidence)})"),
        )
    else:
        info.add_row("Likely head", "none found (no layer looks like a classifier)")
    if ckpt.shared:
        info.add_row("Tied tensors", escape("; ".join(" = ".join(g) for g in ckpt.shared)))
    for name, alt in summary.alternatives.items():
        same = "same keys and shapes as the chosen weights" if alt.same_structure else "different keys or shapes"
        info.add_row("Alternative", escape(f"{name}: {alt.tensors} tensors, {alt.parameters:,} parameters ({same})"))
    entries = list(summary.entries.items())
    for key, brief in entries[:MAX_ENTRY_LINES]:
        info.add_row("Entry", escape(f"{key}: {brief}"))
    if len(entries) > MAX_ENTRY_LINES:
        info.add_row("Entry", f"… and {len(entries) - MAX_ENTRY_LINES} more (see --json)")
    for key, value in summary.metadata.items():
        info.add_row("Metadata", escape(f"{key}: {value}"))
    if ckpt.classes:
        info.add_row("Classes named", escape(", ".join(ckpt.classes)))
    for finding in ckpt.findings:
        style = SEVERITY_STYLE.get(finding.severity, "")
        info.add_row("Finding", f"[{style}]{escape(f'{finding.severity}: {finding.kind}: {finding.detail}')}[/]")
    console.print(info)

    if not ckpt.tensors:
        return
    tree = Tree(f"[bold]module tree[/] ({summary.parameters:,} parameters)")
    _add_tree(tree, summary.tree, depth_left=depth)
    console.print(tree)


def _add_tree(parent: Any, node: "ModuleNode", *, depth_left: int | None) -> None:

    for child in node.children:
        label = f"[bold]{escape(child.label())}[/]"
        what = child.describe_tensors() if not child.children else ""
        if child.tensors and child.children:  # a module with its own tensors and submodules (e.g. ViT root)
            what = ", ".join(str(t) for t in child.tensors)
        if what:
            label += f"  {escape(what)}"
        if child.children or child.count > 1:
            each = " each" if child.count > 1 else ""
            label += f"  [dim]{child.parameters:,} params{each}[/]"
        branch = parent.add(label)
        if child.children and (depth_left is None or depth_left > 1):
            _add_tree(branch, child, depth_left=None if depth_left is None else depth_left - 1)
    if node.path == "" and node.tensors:  # top-level tensors with no module (cls_token, pos_embed …)
        for t in node.tensors:
            parent.add(escape(str(t)))


def _render_tensor_table(ckpt: "Checkpoint", summary: "Summary") -> None:
    from rich.table import Table

    from pthkit.summary import tensor_role

    tied = {key: group[0] for group in ckpt.shared for key in group[1:]}
    table = Table(title=f"{summary.tensors} tensors", show_lines=False)
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("role")
    for key, t in ckpt.tensors.items():
        role: str = tensor_role(key, t)
        if key in tied:
            role += f" (tied to {tied[key]})"
        table.add_row(escape(key), str(list(t.shape)), str(t.dtype).removeprefix("torch."), escape(role))
    console.print(table)


# --- scan ------------------------------------------------------------------------------------------------------------


def _scan_one(path: Path) -> dict[str, Any]:
    """Scan one file into a plain row. A file that cannot be parsed is a row too (never "safe")."""
    from pthkit.checkpoint import scan_file
    from pthkit.errors import PthkitError

    try:
        report = scan_file(path)
    except PthkitError as err:
        return {"path": str(path), "verdict": "unreadable", "error": str(err), "format": None, "globals": [],
                "findings": []}
    except Exception as err:  # noqa: BLE001 - a scanner keeps going; the file is reported as not safe
        if os.environ.get("PTHKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
            raise
        message = " ".join(str(err).split())
        return {"path": str(path), "verdict": "unreadable", "error": f"unexpected {type(err).__name__}: {message}",
                "format": None, "globals": [], "findings": []}
    row = report.to_dict()
    row["path"] = str(row.get("path", path))
    return row


def _row_globals(row: dict[str, Any]) -> list[str]:
    return [str(g) for g in row.get("globals") or []]


def scan_command(
    files: Annotated[list[Path], typer.Argument(help="Weights files to scan.")],
    json: JsonOpt = False,
) -> None:
    """Say for each file whether loading it is safe: every global it names, every construct refused, a verdict.

    Nothing from the files runs. Exit code 0 only when every file is safe (for CI); a file that cannot be parsed is
    never safe.
    """
    rows = [_scan_one(path) for path in files]
    all_safe = all(row.get("verdict") == "safe" for row in rows)
    if json:
        print_json({"safe": all_safe, "files": rows})
    else:
        _render_scan(rows)
    if not all_safe:
        raise typer.Exit(code=1)


def _render_scan(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="pthkit scan", show_lines=True)
    table.add_column("file", overflow="fold")
    table.add_column("format")
    table.add_column("verdict")
    table.add_column("globals referenced", overflow="fold")
    table.add_column("refused / findings", overflow="fold")
    for row in rows:
        verdict = str(row.get("verdict"))
        style = VERDICT_STYLE.get(verdict, "")
        findings = []
        if row.get("error"):
            findings.append(f"[red]{escape(str(row['error']))}[/]")
        for f in row.get("findings") or []:
            severity = f.get("severity", "info")
            text = escape(f"{severity}: {f.get('kind')}: {f.get('detail')}")
            findings.append(f"[{SEVERITY_STYLE.get(severity, '')}]{text}[/]")
        table.add_row(
            escape(str(row.get("path"))),
            escape(str(row.get("format") or "?")),
            f"[{style}]{escape(verdict)}[/]",
            "\n".join(escape(g) for g in _row_globals(row)) or "[dim]none[/]",
            "\n".join(findings) or "[dim]none[/]",
        )
    console.print(table)
    unsafe = sum(1 for row in rows if row.get("verdict") != "safe")
    if unsafe:
        console.print(f"[red]{unsafe} of {len(rows)} file(s) not safe.[/]")
    else:
        console.print(f"[green]All {len(rows)} file(s) safe.[/]")
