"""Contest-aware post-processing tuned on validation: the empty-tile gate, the joint search, the
postprocess.json that predict and evaluate apply by default, flags that override it."""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from buildings.cli import main
from buildings.data.splits import SplitSource
from buildings.inference import (
    InferenceBackend,
    MaskRule,
    Postprocess,
    Predictor,
    evaluate,
    load_choice,
    tune_postprocess,
)
from buildings.models import build_model
from buildings.task import Task


def test_the_empty_tile_gates_drop_the_whole_mask():
    mask = np.zeros((32, 32), np.uint8)
    mask[2:6, 2:6] = 1  # 16 px
    probs = np.where(mask, 0.7, 0.1).astype(np.float32)
    probs = probs[..., None]

    def kept(**gates):
        return int(MaskRule(0.5, Postprocess(**gates)).mask(probs).sum())

    assert kept(empty_below_area=17) == 0
    assert kept(empty_below_area=16) == 16
    assert kept(empty_below_peak=0.8) == 0
    assert kept(empty_below_peak=0.6) == 16
    assert Postprocess(empty_below_area=17).active and not Postprocess().active


def _png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


class RedChannelBackend(InferenceBackend):
    """A stand-in model behind the inference-backend protocol: its building probability is the
    image's red channel / 255."""

    name, task = "red", Task(1)

    def probabilities(self, windows, tta="none"):
        return windows[..., :1].astype(np.float32) / 255


def red_channel_predictor():
    return Predictor([RedChannelBackend()], batch_size=4)


def test_tuning_finds_what_empty_tiles_need(tmp_path):
    """Half the tiles are empty with a 50-pixel false blob; the others hold one building, found. At
    threshold 0.5 with nothing else the empty ones score 0; a min-area or an area gate makes them 1."""
    records = []
    for k in range(8):
        image = np.zeros((64, 64, 3), np.uint8)
        truth = np.zeros((64, 64), np.uint8)
        if k % 2:
            truth[10:40, 10:40] = 1
            image[10:40, 10:40, 0] = 240
        else:
            image[50:55, 50:60, 0] = 200  # 50 px, probability 0.78
        records.append({"image": _png(image[..., ::-1]), "mask": _png(truth), "name": f"t{k}.png", "has_mask": True})
    source = SplitSource(records=records, name="fake", split="validation", directory=tmp_path, task=Task(1))
    choice = tune_postprocess(red_channel_predictor(), source)
    assert choice.baseline == pytest.approx(0.5)
    assert choice.score == pytest.approx(1.0)
    # Any of: a min-area or an area gate above 50 px, a peak gate or a threshold above 0.78; ties go to
    # the simplest (one change, the threshold nearest 0.5).
    post = choice.rule.postprocess
    fixes = [post.min_area > 50, post.empty_below_area > 50, post.empty_below_peak > 0.78, choice.rule.threshold > 0.78]
    assert sum(fixes) == 1, choice
    assert choice.steps[0][0] == "threshold 0.5, nothing else" and choice.steps[-1][1] == pytest.approx(1.0)


def test_tune_writes_the_choice_predict_applies_and_flags_override(synth_dataset, tmp_path):
    keras.utils.set_random_seed(0)
    checkpoint = tmp_path / "run" / "best.keras"
    checkpoint.parent.mkdir()
    build_model("unet", filters=4, depth=2).save(checkpoint)
    runner = CliRunner()
    refused = runner.invoke(main, ["tune", "--checkpoint", str(checkpoint), "--data", str(synth_dataset),
                                   "--split", "test"])
    assert refused.exit_code == 2 and "test split" in refused.output
    assert not (checkpoint.parent / "postprocess.json").exists()

    tuned = runner.invoke(main, ["tune", "--checkpoint", str(checkpoint), "--data", str(synth_dataset)])
    assert tuned.exit_code == 0, tuned.output
    choice = load_choice(checkpoint.parent / "postprocess.json")
    assert choice.tuned_on["split"] == "validation" and choice.score >= choice.baseline
    # The fast search scores exactly what the real evaluation path scores with that choice.
    from buildings.inference import Predictor

    predictor = Predictor.from_checkpoints([checkpoint], rule=choice.rule)
    result = evaluate(predictor, synth_dataset, "validation")
    assert result.dice == pytest.approx(choice.score, abs=1e-9)

    applied = runner.invoke(main, ["predict", "--checkpoint", str(checkpoint), "--data", str(synth_dataset),
                                   "--out", str(tmp_path / "a.csv")])
    assert applied.exit_code == 0, applied.output
    assert f"threshold {choice.rule.threshold:g}" in applied.output and "postprocess.json" in applied.output
    overridden = runner.invoke(main, ["predict", "--checkpoint", str(checkpoint), "--data", str(synth_dataset),
                                      "--min-area", "7", "--out", str(tmp_path / "b.csv")])
    assert overridden.exit_code == 0 and "min-area 7" in overridden.output and "overridden by --min-area" in overridden.output
    plain = runner.invoke(main, ["predict", "--checkpoint", str(checkpoint), "--data", str(synth_dataset),
                                 "--postprocess", "none", "--out", str(tmp_path / "c.csv")])
    assert plain.exit_code == 0 and "threshold 0.5, no post-processing (from defaults)" in plain.output

    (checkpoint.parent / "postprocess.json").write_text(json.dumps({"threshold": 3}))
    broken = runner.invoke(main, ["predict", "--checkpoint", str(checkpoint), "--data", str(synth_dataset),
                                  "--out", str(tmp_path / "d.csv")])
    assert broken.exit_code == 1 and "postprocess.json" in broken.output and "buildings tune" in broken.output
    assert not (tmp_path / "d.csv").exists()
