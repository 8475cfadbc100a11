"""One inference engine for predict, evaluate, fine-tuning's validation, serve and the Ray workers.

```python
from pthkit.engine import Engine, TorchBackend
from pthkit.data import ImageSource

engine = Engine(TorchBackend(module), batch_size=32, amp=None, progress=False)
for batch, outputs in engine.run(ImageSource(paths, preprocess)):
    ...   # outputs as the backend returned them (tensor, tuple or dict); batch.failed kept in place
```

Seams (:mod:`pthkit.engine.types`): :class:`Backend` (torch here; ONNX Runtime/OpenVINO plug in the same way),
:class:`InputSource` (images: :class:`pthkit.data.images.ImageSource`; tables: ``pthkit.data.tables``),
:class:`Batch`. Thread policy: :func:`pthkit.engine.threads.cli_thread_policy` (the CLI's, called once).
"""

from __future__ import annotations

from pthkit.engine.backends import (
    FeatureExtractor,
    TorchBackend,
    as_backend,
    cpu_supports_bf16,
)
from pthkit.engine.build import backend_for, engine_for
from pthkit.engine.core import (
    Collected,
    Engine,
    EngineRun,
    LoaderSource,
    RunInterrupted,
    collect,
    evaluate_batches,
    first_tensor,
)
from pthkit.engine.progress import (
    ProgressBar,
    RunCounters,
    current_progress,
    progress_bar,
)
from pthkit.engine.types import AMP_MODES, AmpMode, Backend, Batch, InputSource, Outputs

__all__ = [
    "AMP_MODES",
    "AmpMode",
    "Backend",
    "Batch",
    "Collected",
    "Engine",
    "EngineRun",
    "FeatureExtractor",
    "InputSource",
    "LoaderSource",
    "Outputs",
    "ProgressBar",
    "RunCounters",
    "RunInterrupted",
    "TorchBackend",
    "as_backend",
    "backend_for",
    "collect",
    "cpu_supports_bf16",
    "current_progress",
    "engine_for",
    "evaluate_batches",
    "first_tensor",
    "progress_bar",
]
