"""Export a model to ONNX, TorchScript, ``torch.export`` (.pt2) or OpenVINO, with a parity report, and open the
exported files again through :func:`pthkit.open` (:mod:`pthkit.export.openers`).

Optional runtimes (onnx, onnxruntime, openvino) are imported inside functions only: importing this package needs
torch alone.
"""

from __future__ import annotations

__all__: list[str] = []
