"""`pthkit predict` on a bare file checks the loaded model on the packaged sample photos once, and warns when its
predictions there are uniform, constant or miss the photos' known classes (wrong weights or wrong normalization)."""

from __future__ import annotations

from pthkit.cli.main import main
from pthkit.samples import photo


def _run(capsys, *args: object) -> tuple[int, str, str]:
    code = main(["predict", *(str(a) for a in args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_inferred_normalization_passes_the_post_load_check(capsys, lite0_path):
    code, _, err = _run(capsys, lite0_path, photo("coffee.png"), "--json")
    assert code == 0, err
    assert "post-load check" not in err


def test_wrong_normalization_is_flagged_by_the_post_load_check(capsys, lite0_path):
    # Raw 0-255 inputs into a model trained on [-1, 1]: confident, varied and meaningless predictions.
    code, _, err = _run(capsys, lite0_path, photo("coffee.png"), "--json", "--scale", "255", "--mean", "0,0,0",
                        "--std", "1,1,1")
    assert code == 0, err
    assert "post-load check on sample photos" in err
    assert "preprocessing (normalization) may not match the weights" in " ".join(err.split())
