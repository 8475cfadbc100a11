"""The design document's second example, shared by the table tests and ``benchmarks/tables.py``.

``MyModel`` is ``nn.Linear(10, 50) → relu → nn.Linear(50, 2)``; :data:`MODEL_PY` is its source as a user's
``my_model.py`` (what ``--arch my_model.py:MyModel`` loads), and :func:`write_model` writes that file and weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

__all__ = ["MODEL_PY", "NAMES", "MyModel", "load_class", "single_thread", "write_model"]

NAMES = [f"f{i}" for i in range(10)]


class MyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(10, 50)
        self.layer2 = nn.Linear(50, 2)

    def forward(self, x):
        return self.layer2(torch.relu(self.layer1(x)))


MODEL_PY = "import torch\nfrom torch import nn\n\n\n" + inspect.getsource(MyModel)


def load_class(path: Path, name: str = "MyModel") -> type[nn.Module]:
    """The class ``name`` of the Python file ``path`` (imported under a name unique to the path)."""
    module_name = "user_model_" + hashlib.sha1(str(path).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def write_model(folder: Path, *, seed: int = 0, data_parallel: bool = False, weights: str = "my_custom_model.pth",
                out_features: int = 2) -> tuple[str, Path, nn.Module]:
    """Write ``folder/my_model.py`` (the head ``nn.Linear(50, out_features)``) and its random-init weights
    (``torch.manual_seed(seed)``; saved through ``nn.DataParallel`` for ``module.`` prefixes if asked).

    Returns ``(arch spec "…/my_model.py:MyModel", weights path, the module in eval mode)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "my_model.py"
    code.write_text(MODEL_PY.replace("nn.Linear(50, 2)", f"nn.Linear(50, {out_features})"), encoding="utf-8")
    torch.manual_seed(seed)
    model = load_class(code)().eval()
    torch.save((nn.DataParallel(model) if data_parallel else model).state_dict(), folder / weights)
    return f"{code}:MyModel", folder / weights, model


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one thread inside (tests compare numbers; the machine is shared), as it was found after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
