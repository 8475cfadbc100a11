"""Fine-tuning and evaluating non-image models on tables (a user class without a num_classes argument)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import pthkit
from _tabular_model import NAMES, single_thread, write_model
from pthkit.errors import PreprocessError, TrainingError
from pthkit.tasks.tabular import RegressionReport, decide_task, evaluate_table, finetune_table

SPECIES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """my_model.py, weights saved through DataParallel ('module.' prefix), a separable 3-class table, a linear
    regression table."""
    root = tmp_path_factory.mktemp("tab")
    write_model(root, data_parallel=True)
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    centers = rng.normal(size=(3, 10)) * 3
    x = centers[y] + rng.normal(size=(n, 10))
    with open(root / "train.csv", "w") as fh:
        fh.write(",".join([*NAMES, "species"]) + "\n")
        for r, t in zip(x, y):
            fh.write(",".join(f"{v:.6f}" for v in r) + f",{SPECIES[t]}\n")
    w = rng.normal(size=10)
    xr = rng.normal(size=(n, 10))
    yr = xr @ w + 0.5 + rng.normal(size=n) * 0.05
    with open(root / "reg.csv", "w") as fh:
        fh.write(",".join([*NAMES, "price"]) + "\n")
        for r, t in zip(xr, yr):
            fh.write(",".join(f"{v:.6f}" for v in r) + f",{t:.6f}\n")
    return {"root": root, "arch": Path(f"{root / 'my_model.py'}:MyModel"), "weights": root / "my_custom_model.pth",
            "train": root / "train.csv", "reg": root / "reg.csv"}


def test_decide_task_from_the_target_column() -> None:
    assert decide_task(np.array(["a", "b", "a"], dtype=object), "t").kind == "classify"
    codes = decide_task(np.array(["0", "1", "2", "1"], dtype=object), "t")
    assert codes.kind == "classify" and codes.classes == ["0", "1", "2"]
    assert decide_task(np.array(["0.5", "1.25", "3"], dtype=object), "t").kind == "regress"
    assert decide_task(np.array(["0", "1"], dtype=object), "t", "mse").kind == "regress"
    assert decide_task(np.array(["0.5", "1.5"], dtype=object), "t", "cross-entropy").kind == "classify"
    assert decide_task(np.array(["10", "9", "100"], dtype=object), "t").classes == ["9", "10", "100"]
    with pytest.raises(PreprocessError):
        decide_task(np.array(["a"], dtype=object), "t", "hinge")


def test_classification_finetune_replaces_the_head_and_learns(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = finetune_table(files["weights"], files["train"], out, target="species", arch=str(files["arch"]),
                            epochs=40, progress=False, seed=0)
    assert result.head_change == "layer2: 50 → 2 replaced by 50 → 3"
    assert result.classes == SPECIES and result.task == "classify"
    assert result.best is not None and result.best["val_acc"] >= 0.9
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pthkit"]["input_spec"]["feature_names"] == NAMES and cfg["label_names"] == SPECIES
    handle = pthkit.open(out, arch=str(files["arch"]))
    assert handle.task == "classify" and handle.labels == SPECIES
    assert handle.module is not None and handle.module.layer2.out_features == 3  # type: ignore[union-attr]
    rows = list(handle.predict(str(files["train"]), top_k=1))  # the target column is left out by the spec's names
    truth = [line.rsplit(",", 1)[1] for line in files["train"].read_text().splitlines()[1:]]
    accuracy = np.mean([r.classes[0].label == t for r, t in zip(rows, truth)])
    assert accuracy >= 0.9
    report = evaluate_table(handle, files["train"])
    assert report.top1 == pytest.approx(accuracy, abs=1e-9)


def test_regression_finetune_and_evaluate(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "reg"
    result = finetune_table(files["weights"], files["reg"], out, target="price", arch=str(files["arch"]), epochs=60,
                            lr=3e-3, progress=False)
    assert result.task == "regress" and result.head_change == "layer2: 50 → 2 replaced by 50 → 1"
    handle = pthkit.open(out, arch=str(files["arch"]))
    report = evaluate_table(handle, files["reg"])
    assert isinstance(report, RegressionReport)
    # the numbers: recompute MAE / RMSE / R² from the model's own outputs
    data = np.loadtxt(files["reg"], delimiter=",", skiprows=1)
    with torch.no_grad():
        pred = handle.module(torch.from_numpy(data[:, :10]).float()).double().numpy()[:, 0]  # type: ignore[misc]
    err = pred - data[:, 10]
    assert report.mae == pytest.approx(np.abs(err).mean(), rel=1e-4)
    assert report.rmse == pytest.approx(np.sqrt((err**2).mean()), rel=1e-4)
    r2 = 1 - (err**2).sum() / ((data[:, 10] - data[:, 10].mean()) ** 2).sum()
    assert report.r2 == pytest.approx(r2, rel=1e-4) and report.r2 > 0.8
    row = next(iter(handle.predict(str(files["reg"]))))
    assert list(row.to_dict()["outputs"]) == ["price"]  # type: ignore[attr-defined]


def test_resume_extends_the_run_and_refuses_a_used_folder(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = finetune_table(files["weights"], files["train"], out, target="species", arch=str(files["arch"]),
                           epochs=2, progress=False)
    assert first.epochs_run == 2
    with pytest.raises(TrainingError):
        finetune_table(files["weights"], files["train"], out, target="species", arch=str(files["arch"]), epochs=2,
                       progress=False)
    resumed = finetune_table(files["weights"], files["train"], out, target="species", resume=True, epochs=4,
                             progress=False)
    assert resumed.resumed and resumed.epochs_run == 4 and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first.history
