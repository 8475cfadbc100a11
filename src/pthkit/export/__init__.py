"""Export a model to ONNX, TorchScript, ``torch.export`` (.pt2) or OpenVINO, with a parity report, and open the
exported files again through :func:`pthkit.open` (:mod:`pthkit.export.openers`).

```python
import pthkit
from pthkit.export import export_model

result = export_model(pthkit.open("resnet18.pth"), "onnx", "resnet18.onnx")   # raises ParityError beyond tolerance
print(result.parity.describe())
m = pthkit.open("resnet18.onnx")            # same Model handle; ONNX Runtime runs it, preprocessing from metadata
```

Optional runtimes (onnx, onnxruntime, openvino) are imported inside functions only: importing this package needs
torch alone; a missing one is a one-line :class:`~pthkit.errors.ExportError` naming the extra.
"""

from __future__ import annotations

from pthkit.export.api import FORMATS, PRECISIONS, ExportResult, export_model
from pthkit.export.parity import ParityReport, Tolerance, check_parity

__all__ = ["FORMATS", "PRECISIONS", "ExportResult", "ParityReport", "Tolerance", "check_parity", "export_model"]
