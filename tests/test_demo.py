"""The quick start's main job, shortened: synthesise, build, train, predict, write, score."""

import numpy as np
import pytest

from buildings.demo import run_demo
from buildings.formats.rle import decode_rle
from buildings.formats.submission import read_submission


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    messages = []
    result = run_demo(tmp_path / "demo", minutes=0.2, n=16, image_size=128, say=messages.append)
    assert [m.split(" ")[0] for m in messages if m[:2] in ("1/", "2/", "3/", "4/", "5/")] == \
        ["1/5", "2/5", "3/5", "4/5", "5/5"]
    rows = read_submission(result["submission"], shape=(512, 512))
    truth = read_submission(tmp_path / "demo" / "download" / "test_a_mask.csv")
    assert list(rows) == list(truth)
    assert result["overlay"].is_file() and (result["run_dir"] / "best.keras").is_file()
    assert result["score"].n_images == len(truth)
    dice = []  # the contest score, recomputed here from the two files
    for name, rle in truth.items():
        t, p = decode_rle(rle).astype(bool), decode_rle(rows[name]).astype(bool)
        dice.append(1.0 if not (t.any() or p.any()) else 2 * (t & p).sum() / (t.sum() + p.sum()))
    assert result["score"].dice == pytest.approx(float(np.mean(dice)), abs=1e-12)
    if result["run_dir"].joinpath("summary.json").read_text().find('"stop_reason": null') < 0:
        assert any("--max-minutes" in m for m in messages), "an early stop must say why"

    again = []
    second = run_demo(tmp_path / "demo", epochs=1, minutes=0.2, n=16, image_size=128, say=again.append)
    assert again[0].startswith("0/5 starting afresh"), again
    assert (second["run_dir"] / "history.csv").read_text().count("\n") == 2  # header + its one epoch, not resumed
