"""What a model consumes: :class:`InputSpec`, inferred from its first layer or given with ``--input-shape``.

A weights file says nothing about its inputs, but the first layer that touches them does:

- ``nn.Linear(10, 50)`` → feature vectors of 10 values (``kind="features"``, shape ``(10,)``);
- ``nn.Conv1d/2d/3d(C, …)`` → ``C`` channels of rank 1/2/3 (``kind="tensor"``, or ``"image"`` for 1/3-channel
  2-d convolutions when image preprocessing is known);
- ``nn.Embedding(N, D)`` → integer ids below ``N`` (``kind="tokens"``, dtype ``int64``);
- ``nn.LSTM/GRU/RNN(input_size, …)`` → sequences of ``input_size`` values, ``batch_first`` read from the module.

Every spec carries ``source``, the evidence it was decided from ("inferred from first layer fc1: Linear(10 → 50)").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from torch import nn

from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from pthkit.preprocess.types import Preprocess

__all__ = ["InputKind", "InputSpec", "infer_input_spec", "parse_input_shape", "spec_from_shape"]

InputKind = Literal["image", "features", "sequence", "tokens", "tensor"]
INPUT_KINDS: tuple[str, ...] = get_args(InputKind)
_DTYPES = ("float32", "int64")
# A shape with more dimensions than this is not a per-example shape anyone means.
_MAX_RANK = 6


@dataclass(frozen=True)
class InputSpec:
    """What one example fed to a model looks like (the batch dimension is never part of ``shape``).

    - ``kind``: ``"image"`` (decoded and preprocessed pictures), ``"features"`` (a vector per example: table rows),
      ``"sequence"`` (steps × features), ``"tokens"`` (integer ids) or ``"tensor"`` (any other fixed-rank array).
    - ``shape``: per-example shape; ``None`` marks a free dimension (sequence length, image size of a conv net).
    - ``dtype``: ``"float32"`` or ``"int64"`` (token ids).
    - ``channels`` / ``rank``: for convolutional inputs; ``num_embeddings`` for token ids; ``batch_first`` for RNNs.
    - ``feature_names``: the table columns, in order (recorded in bundles after fine-tuning on a table).
    - ``source``: where this came from (first layer, ``--input-shape``, bundle config).
    """

    kind: InputKind
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    channels: int | None = None
    rank: int | None = None
    feature_names: list[str] | None = field(default=None, hash=False, compare=True)
    num_embeddings: int | None = None
    batch_first: bool | None = None
    source: str = "unknown"

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    @property
    def width(self) -> int | None:
        """Values per example of a flat input (features: ``in_features``), else None."""
        if self.kind == "features" and len(self.shape) == 1:
            return self.shape[0]
        return None

    def with_feature_names(self, names: list[str] | None, *, source: str | None = None) -> InputSpec:
        """The same spec with table column names (and optionally another source)."""
        return InputSpec(kind=self.kind, shape=self.shape, dtype=self.dtype, channels=self.channels, rank=self.rank,
                         feature_names=list(names) if names is not None else None,
                         num_embeddings=self.num_embeddings, batch_first=self.batch_first,
                         source=source or self.source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (bundles store it under ``pthkit.input_spec``)."""
        return {
            "kind": self.kind, "shape": list(self.shape), "dtype": self.dtype, "channels": self.channels,
            "rank": self.rank, "feature_names": list(self.feature_names) if self.feature_names is not None else None,
            "num_embeddings": self.num_embeddings, "batch_first": self.batch_first, "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None) -> InputSpec:
        """Read :meth:`to_dict`'s output back, validating every field (the data comes from a file)."""
        if not isinstance(data, dict):
            raise PreprocessError.build("input spec", received=type(data).__name__, expected="a JSON object")
        kind = data.get("kind")
        if kind not in INPUT_KINDS:
            raise PreprocessError.build("input spec kind", received=repr(kind)[:60], expected=" | ".join(INPUT_KINDS))
        raw_shape = data.get("shape")
        if not isinstance(raw_shape, (list, tuple)) or len(raw_shape) > _MAX_RANK or not all(
                v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in raw_shape):
            raise PreprocessError.build("input spec shape", received=repr(raw_shape)[:60],
                                        expected=f"a list of up to {_MAX_RANK} positive integers or nulls")
        dtype = data.get("dtype", "float32")
        if dtype not in _DTYPES:
            raise PreprocessError.build("input spec dtype", received=repr(dtype)[:40], expected=" | ".join(_DTYPES))
        names = data.get("feature_names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise PreprocessError.build("input spec feature_names", received=repr(names)[:60],
                                        expected="a list of column names")

        def opt_int(key: str) -> int | None:
            value = data.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PreprocessError.build(f"input spec {key}", received=repr(value)[:40], expected="an integer >= 0")
            return value

        batch_first = data.get("batch_first")
        if batch_first is not None and not isinstance(batch_first, bool):
            raise PreprocessError.build("input spec batch_first", received=repr(batch_first)[:40],
                                        expected="true, false or null")
        src = source or data.get("source")
        return cls(kind=kind, shape=tuple(raw_shape), dtype=dtype, channels=opt_int("channels"),
                   rank=opt_int("rank"), feature_names=list(names) if names is not None else None,
                   num_embeddings=opt_int("num_embeddings"), batch_first=batch_first,
                   source=str(src) if src is not None else "bundle config")

    def describe(self) -> str:
        """One line: ``features (10,) float32 — inferred from first layer fc1: Linear(10 → 50)``."""
        shape = "(" + ", ".join("*" if v is None else str(v) for v in self.shape) + ("," if len(self.shape) == 1 else "") + ")"
        extra = []
        if self.num_embeddings is not None:
            extra.append(f"ids < {self.num_embeddings}")
        if self.batch_first is not None:
            extra.append(f"batch_first={self.batch_first}")
        if self.feature_names:
            shown = ", ".join(self.feature_names[:6]) + (" …" if len(self.feature_names) > 6 else "")
            extra.append(f"columns {shown}")
        more = f" [{'; '.join(extra)}]" if extra else ""
        return f"{self.kind} {shape} {self.dtype}{more} — {self.source}"

    def __str__(self) -> str:
        return self.describe()


# --- inference ---------------------------------------------------------------------------------------------------------

_CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                       nn.ConvTranspose3d)
_RNNS: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU, nn.RNN)
_FIRST_LAYERS = (nn.Linear, nn.Embedding, nn.EmbeddingBag, *_CONVS, *_RNNS)


def _first_layer(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The first input-consuming layer in registration order (the order ``__init__`` built them in)."""
    for name, sub in module.named_modules():  # the model itself first (name "")
        if isinstance(sub, _FIRST_LAYERS):
            return name, cast(nn.Module, sub)
    return None


def _layer_text(name: str, layer: nn.Module) -> str:
    label = name or "(the model itself)"
    if isinstance(layer, nn.Linear):
        return f"{label}: Linear({layer.in_features} → {layer.out_features})"
    if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)):
        return f"{label}: {type(layer).__name__}({layer.num_embeddings}, {layer.embedding_dim})"
    if isinstance(layer, _CONVS):
        conv: Any = layer
        return f"{label}: {type(layer).__name__}({conv.in_channels} → {conv.out_channels})"
    rnn: Any = layer
    return f"{label}: {type(layer).__name__}({rnn.input_size} → {rnn.hidden_size}, batch_first={rnn.batch_first})"


def infer_input_spec(module: nn.Module, *, preprocess: Preprocess | None = None) -> InputSpec:
    """What ``module`` consumes, from its first layer (see the module docstring), with the evidence in ``source``.

    ``preprocess`` (image preprocessing already resolved for the model) makes a 2-d convolutional model an image
    model of ``preprocess.input_size``. Without it, a 2-d convolution over 1 or 3 channels is taken as an image model
    too (its size then free), since that is what such networks are trained on.
    """
    if preprocess is not None:
        c, h, w = (int(v) for v in preprocess.input_size)
        return InputSpec(kind="image", shape=(c, h, w), channels=c, rank=2,
                         source="image preprocessing" + (f" ({preprocess.sources.get('input_size')})"
                                                         if getattr(preprocess, "sources", None)
                                                         and preprocess.sources.get("input_size") else ""))
    found = _first_layer(module)
    if found is None:
        return InputSpec(kind="tensor", shape=(), source=f"unknown: {type(module).__name__} has no Linear, Conv, "
                         "Embedding or RNN layer (pass --input-shape)")
    name, layer = found
    evidence = f"inferred from first layer {_layer_text(name, layer)}"
    if isinstance(layer, nn.Linear):
        return InputSpec(kind="features", shape=(layer.in_features,), source=evidence)
    if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)):
        return InputSpec(kind="tokens", shape=(None,), dtype="int64", num_embeddings=layer.num_embeddings,
                         source=evidence)
    if isinstance(layer, _RNNS):
        rnn: Any = layer
        return InputSpec(kind="sequence", shape=(None, int(rnn.input_size)), batch_first=bool(rnn.batch_first),
                         source=evidence)
    conv: Any = layer
    rank = len(conv.kernel_size)
    channels = int(conv.in_channels)
    if rank == 2 and channels in (1, 3):
        return InputSpec(kind="image", shape=(channels, None, None), channels=channels, rank=2, source=evidence)
    return InputSpec(kind="tensor", shape=(channels, *([None] * rank)), channels=channels, rank=rank, source=evidence)


# --- --input-shape ------------------------------------------------------------------------------------------------------


def parse_input_shape(value: str | tuple[int | None, ...] | list[int | None]) -> tuple[int | None, ...]:
    """``"10"`` → ``(10,)``; ``"3,32,32"`` / ``"3x32x32"`` → ``(3, 32, 32)``; ``"*,8"`` or ``"-1,8"`` → ``(None, 8)``.

    Raises:
        PreprocessError: anything else (empty, zero or negative sizes other than -1, more than 6 dimensions).
    """
    expected = "sizes per example separated by commas, e.g. 10 or 3,32,32 (* or -1 for a free dimension)"
    items: list[Any]
    if isinstance(value, str):
        text = value.strip().strip("()[]").replace("x", ",").replace(" ", "")
        items = [p for p in text.split(",") if p != ""] if text else []
    elif isinstance(value, (tuple, list)):
        items = list(value)
    else:
        raise PreprocessError.build("--input-shape", received=repr(value)[:60], expected=expected)
    if not items or len(items) > _MAX_RANK:
        raise PreprocessError.build("--input-shape", received=repr(value)[:60], expected=expected)
    out: list[int | None] = []
    for item in items:
        if item is None or item in ("*", "-1", "?", "None") or item == -1:
            out.append(None)
            continue
        try:
            size = int(item)
            if isinstance(item, (bool, float)) or size < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise PreprocessError.build("--input-shape", received=repr(value)[:60], expected=expected) from None
        out.append(size)
    return tuple(out)


def spec_from_shape(shape: tuple[int | None, ...] | str, *, source: str, dtype: str = "float32") -> InputSpec:
    """The spec for an explicit per-example shape: ``(10,)`` → features, ``(None, 8)`` → sequence, anything else →
    tensor (``(3, 32, 32)`` too: an explicit shape means arrays are fed as they are, not decoded images)."""
    dims = parse_input_shape(shape) if isinstance(shape, str) else parse_input_shape(tuple(shape))
    if dtype not in _DTYPES:
        raise PreprocessError.build("input dtype", received=repr(dtype), expected=" | ".join(_DTYPES))
    if dtype == "int64":
        return InputSpec(kind="tokens", shape=dims, dtype="int64", source=source)
    if len(dims) == 1:
        return InputSpec(kind="features", shape=dims, source=source)
    if len(dims) == 2 and dims[0] is None:
        return InputSpec(kind="sequence", shape=dims, batch_first=True, source=source)
    return InputSpec(kind="tensor", shape=dims, channels=dims[0] if len(dims) >= 2 else None,
                     rank=len(dims) - 1 if len(dims) >= 2 else None, source=source)
