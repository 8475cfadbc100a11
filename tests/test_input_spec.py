"""InputSpec: inferred from the first layer, overridden by --input-shape, round-tripped through bundles."""

from __future__ import annotations

import pytest
from torch import nn

from _tabular_model import MyModel
from pthkit.errors import PreprocessError
from pthkit.input_spec import InputSpec, infer_input_spec, parse_input_shape, spec_from_shape


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 8)
        self.rnn = nn.GRU(8, 16, batch_first=True)


def test_linear_first_layer_gives_features_of_in_features() -> None:
    spec = infer_input_spec(MyModel())
    assert (spec.kind, spec.shape, spec.dtype, spec.width) == ("features", (10,), "float32", 10)
    assert "layer1" in spec.source and "10" in spec.source


@pytest.mark.parametrize(("layer", "kind", "shape", "rank"), [
    (nn.Conv1d(4, 8, 3), "tensor", (4, None), 1),
    (nn.Conv2d(3, 8, 3), "image", (3, None, None), 2),
    (nn.Conv2d(1, 8, 3), "image", (1, None, None), 2),
    (nn.Conv2d(5, 8, 3), "tensor", (5, None, None), 2),
    (nn.Conv3d(2, 8, 3), "tensor", (2, None, None, None), 3),
])
def test_conv_first_layer_gives_channels_and_rank(layer: nn.Module, kind: str, shape: tuple, rank: int) -> None:
    spec = infer_input_spec(nn.Sequential(layer, nn.ReLU()))
    assert (spec.kind, spec.shape, spec.rank, spec.channels) == (kind, shape, rank, shape[0])


def test_embedding_gives_integer_ids_below_num_embeddings() -> None:
    spec = infer_input_spec(Tokens())
    assert (spec.kind, spec.dtype, spec.num_embeddings, spec.shape) == ("tokens", "int64", 100, (None,))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
def test_rnn_gives_sequences_and_reads_batch_first(cls: type, batch_first: bool) -> None:
    spec = infer_input_spec(nn.Sequential(cls(7, 16, batch_first=batch_first)))
    assert (spec.kind, spec.shape, spec.batch_first) == ("sequence", (None, 7), batch_first)


def test_model_without_known_layers_is_an_unknown_tensor() -> None:
    spec = infer_input_spec(nn.Sequential(nn.ReLU()))
    assert spec.kind == "tensor" and spec.shape == ()


def test_preprocess_makes_an_image_spec_of_its_input_size() -> None:
    from pthkit.preprocess.types import Preprocess

    spec = infer_input_spec(nn.Conv2d(3, 4, 3), preprocess=Preprocess(input_size=(3, 64, 48)))
    assert (spec.kind, spec.shape) == ("image", (3, 64, 48))


@pytest.mark.parametrize(("text", "shape"), [
    ("10", (10,)), ("3,32,32", (3, 32, 32)), ("3x32x32", (3, 32, 32)), ("*,8", (None, 8)), ("-1,8", (None, 8)),
    ("(1, 28, 28)", (1, 28, 28)), ((4, None), (4, None)),
])
def test_parse_input_shape(text: object, shape: tuple) -> None:
    assert parse_input_shape(text) == shape  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "0", "a", "1,2,3,4,5,6,7", "3,-2", "1.5", 3])
def test_parse_input_shape_refuses(bad: object) -> None:
    with pytest.raises(PreprocessError):
        parse_input_shape(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("shape", "kind"), [
    ((10,), "features"), ((3, 32, 32), "tensor"), ((None, 8), "sequence"), ((4, 16), "tensor"),
])
def test_spec_from_shape_kinds(shape: tuple, kind: str) -> None:
    assert spec_from_shape(shape, source="--input-shape").kind == kind


def test_to_dict_from_dict_round_trip() -> None:
    spec = infer_input_spec(MyModel()).with_feature_names([f"f{i}" for i in range(10)])
    back = InputSpec.from_dict(spec.to_dict())
    assert back == spec
    assert InputSpec.from_dict(infer_input_spec(Tokens()).to_dict()).num_embeddings == 100


@pytest.mark.parametrize("bad", [
    {"kind": "audio", "shape": [10]}, {"kind": "features", "shape": [0]}, {"kind": "features", "shape": "10"},
    {"kind": "features", "shape": [10], "dtype": "float16"}, {"kind": "features", "shape": [10], "feature_names": [1]},
    {"kind": "features", "shape": [10], "batch_first": "yes"}, [1, 2],
])
def test_from_dict_refuses_bad_data(bad: object) -> None:
    with pytest.raises(PreprocessError):
        InputSpec.from_dict(bad)  # type: ignore[arg-type]


def test_open_uses_the_spec_and_input_shape_overrides_it() -> None:
    import pthkit

    assert pthkit.open(MyModel()).input_spec.shape == (10,)
    handle = pthkit.open(MyModel(), input_shape="2,5")
    assert handle.input_spec.shape == (2, 5) and handle.input_spec.source == "input_shape argument"
