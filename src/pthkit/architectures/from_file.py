"""The one place where an architecture name read from a file (bundle ``config.json``, key-map file, HF config) becomes
something pthkit will build.

A name read from a file is data written by whoever made the file. Building it must never import or run code the user
did not name: ``"os.path:os.system"`` in a bundle's config would otherwise be "user code" and run. So a name from a
file must be a *registered* architecture (torchvision, timm, an installed entry point, or one the user registered in
this process). A code spec (``file.py:Class``, ``package.module:factory``) is accepted only when the user passed the
same spec explicitly (``arch=`` / ``--arch``), or passed the trust flag.
"""

from __future__ import annotations

from pthkit.errors import UnsafeCheckpointError

__all__ = ["architecture_from_file"]


def architecture_from_file(name: object, *, where: str, explicit: str | None = None, trust: bool = False) -> str:
    """The qualified registered name for ``name`` read from ``where`` (a file path, for messages).

    - ``explicit``: the architecture the user passed (``--arch``); when given it wins, and a code spec in the file is
      accepted only if it is that same spec.
    - ``trust``: the user's trust flag; a code spec from the file is then accepted as is.

    Raises :class:`UnsafeCheckpointError` for a code spec the user did not name, and the registry's
    ``UnknownArchitectureError`` / ``AmbiguousArchitectureError`` for names it does not know.
    """
    from pthkit.architectures import get_architecture
    from pthkit.architectures.user_code import is_user_spec

    if not isinstance(name, str) or not name.strip() or len(name) > 512:
        shown = repr(name)[:80]
        raise UnsafeCheckpointError.build(
            f"architecture name in {where}", received=shown, expected="a registered architecture name",
            hint="Pass --arch NAME to choose the architecture yourself.")
    if explicit is not None:
        if is_user_spec(explicit):
            return explicit
        return get_architecture(explicit).name
    if is_user_spec(name) and ":" in name and not name.startswith(("timm:", "torchvision:")):
        if trust:
            return name
        raise UnsafeCheckpointError.build(
            f"architecture in {where}", received=f"the code spec {name[:120]!r}",
            expected="a registered architecture name (torchvision, timm or an installed plugin)",
            hint=f"A name read from a file is never imported. If you wrote that code, pass --arch {name[:120]} "
                 "(arch=...) or --trust.")
    return get_architecture(name).name
