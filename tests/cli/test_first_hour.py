"""What a new user sees in the first hour: figures that say what they show, curves, progress lines
that read in a log, the run-time estimate, why a run stopped, and no TensorFlow in a torch run."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

from buildings import figures
from buildings.figures import FALSE_POSITIVE, HIT, MISS, Panel, curves_figure, panels_figure
from buildings.task import Task
from buildings.training import FitConfig, fit
from buildings.training.callbacks import LineProgress, RunEstimate

TINY = {"model": "unet", "model_options": {"filters": 4, "depth": 2}, "image_size": 64, "batch_size": 2,
        "aug": "light", "verbose": 0}


def _closer_to(pixel, colour, than) -> bool:
    pixel = pixel.astype(float)
    return np.linalg.norm(pixel - colour) < np.linalg.norm(pixel - than)


def test_a_binary_panel_shows_hits_false_positives_and_misses_in_their_own_colours():
    grey = np.full((60, 90, 3), 128, np.uint8)
    truth = np.zeros((60, 90), np.uint8)
    pred = np.zeros((60, 90), np.uint8)
    truth[10:50, 5:60] = 1
    pred[10:50, 30:85] = 1  # overlaps the truth on columns 30..59
    shown = figures._binary_panel(Panel("t", grey, truth=truth, prediction=pred))
    hit, fp, miss, none = shown[30, 45], shown[30, 75], shown[30, 15], shown[55, 45]
    assert _closer_to(hit, HIT, FALSE_POSITIVE) and _closer_to(hit, HIT, MISS)
    assert _closer_to(fp, FALSE_POSITIVE, HIT) and _closer_to(fp, FALSE_POSITIVE, MISS)
    assert _closer_to(miss, MISS, HIT) and _closer_to(miss, MISS, FALSE_POSITIVE)
    assert (none == 128).all(), "a pixel neither true nor predicted must keep its colour"
    labels = [h.get_label() for h in figures._legend(Task(1), True, True, [])]
    assert any("false positive" in label for label in labels) and any("missed" in label for label in labels)


def test_panels_figure_writes_a_titled_grid_and_a_multiclass_legend(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (64, 64)).astype(np.uint8)
    panels = [Panel(f"t{i}", image, truth=labels, prediction=np.roll(labels, i), score=0.5) for i in range(5)]
    out = panels_figure(tmp_path / "f.png", panels, title="five", task=Task(3, ("a", "b", "c")), columns=3)
    figure = cv2.imread(str(out))
    assert figure.shape[1] == 3 * 260 and figure.shape[0] > 2 * 260
    names = [h.get_label() for h in figures._legend(Task(3, ("a", "b", "c")), True, True, [0, 2])]
    assert names == ["a", "c", "outlined: wrong class"]
    assert not list(tmp_path.glob(".*")), "no temporary left beside the figure"


def test_curves_mark_the_best_epoch(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.6, 0.5], "val_loss": [0.8, 0.7, 0.75],
                            "val_contest_dice": [0.3, 0.6, 0.5], "val_iou": [0.2, 0.4, 0.35]})
    out = curves_figure(tmp_path / "curves.png", history, monitor="val_contest_dice", title="t")
    assert cv2.imread(str(out)).shape == (420, 1100, 3)


def test_curves_shade_the_epochs_after_the_encoder_is_unfrozen(tmp_path):
    """The phase change is drawn: the same history with a phase column differs from the plain one
    only right of the boundary (the shaded epochs, and the legend entry naming the epoch)."""
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "loss": [0.9, 0.6, 0.5, 0.4], "val_loss": [0.8, 0.7, 0.6, 0.5],
                            "val_contest_dice": [0.3, 0.6, 0.7, 0.8]})
    plain = cv2.imread(str(curves_figure(tmp_path / "a.png", history, monitor="val_contest_dice", title="t")))
    phased = cv2.imread(str(curves_figure(tmp_path / "b.png", history.assign(phase=[0, 0, 1, 1]),
                                          monitor="val_contest_dice", title="t")))
    changed = np.abs(plain.astype(int) - phased.astype(int)).sum(axis=2) > 30
    assert changed.sum() > 2000, "nothing was shaded"
    tinted = phased[changed].astype(int)
    assert (tinted[:, 2] >= tinted[:, 0]).mean() > 0.5, "the shading is orange (more red than blue, BGR)"


def test_line_progress_writes_plain_lines_with_rate_and_eta():
    lines = []
    progress = LineProgress(steps=40, batch_size=4, epochs=3, every=0.25, write=lines.append)
    progress.on_epoch_begin(1)
    for batch in range(40):
        progress.on_train_batch_end(batch, {"loss": 0.5})
    progress.on_epoch_end(1, {"loss": 0.5, "val_contest_dice": 0.7})
    assert len(lines) == 5  # 25, 50, 75, 100 % and the epoch line
    assert lines[0].startswith("epoch 2/3  25% (10/40 steps)") and "images/s" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("epoch 2/3 done in") and "val_contest_dice 0.7" in lines[-1]
    assert not any("\x1b" in line or "\r" in line for line in lines)


def test_run_estimate_suggests_the_cpu_recipe_only_for_long_cpu_runs(monkeypatch):
    import buildings.training.callbacks as callbacks

    for accelerator, steps, expect_recipe in ((False, 500, True), (True, 500, False), (False, 5, False)):
        now = [0.0]
        monkeypatch.setattr(callbacks.time, "perf_counter", lambda now=now: now[0])
        lines = []
        estimate = RunEstimate(steps=steps, epochs=30, first_epoch=0, accelerator=accelerator, write=lines.append)
        for batch in range(4):
            now[0] = 30.0 + 10.0 * batch  # the first step compiles (30 s), every later one takes 10 s
            estimate.on_train_batch_end(batch)
        assert lines[0].startswith("about 10.00 s a step"), lines
        if steps == 500:
            assert f"an epoch ({steps} steps) takes about 1 h 23 min" in lines[0], lines
        assert ("no GPU is visible" in " ".join(lines)) == expect_recipe, lines
    lines = []
    capped = RunEstimate(steps=50, epochs=30, first_epoch=0, accelerator=False, max_minutes=20, write=lines.append)
    for batch in range(4):
        now[0] = 30.0 + 10.0 * batch  # 500 s an epoch: 30 epochs would take 4 h; the cap ends it after 2
        capped.on_train_batch_end(batch)
    assert "the 20-minute budget (--max-minutes) ends the run first, after about 2 epochs" in lines[1], lines
    assert "no GPU is visible" not in " ".join(lines), "a capped run is not told to change its options"


def test_a_time_budget_stop_says_why(synth_dataset, tmp_path):
    config = FitConfig(data=str(synth_dataset), epochs=50, max_minutes=0.001, run_dir=str(tmp_path / "run"), **TINY)
    result = fit(config)
    assert result.epochs_run == 1 and "--max-minutes" in result.stop_reason
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == result.stop_reason


def _h5_groups(data: bytes) -> set[str]:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as handle:
        return set(handle.keys())


def test_checkpoints_carry_the_optimizer_only_where_resuming_needs_it(synth_dataset, tmp_path):
    result = fit(FitConfig(data=str(synth_dataset), epochs=1, run_dir=str(tmp_path / "run"), **TINY))
    for name in ("best.keras", "last.keras"):
        with zipfile.ZipFile(result.run_dir / name) as archive:
            assert "optimizer" not in _h5_groups(archive.read("model.weights.h5")), name
    (backup,) = (result.run_dir / "backup").glob("epoch-*.weights.h5")
    assert "optimizer" in _h5_groups(backup.read_bytes())


def test_a_torch_fit_does_not_import_tensorflow(synth_dataset, tmp_path):
    pytest.importorskip("tensorflow")  # the question only arises where TensorFlow is installed
    args = ["fit", "--model", "unet", "--model-option", "filters=4", "--model-option", "depth=2", "--data",
            str(synth_dataset), "--image-size", "64", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch",
            "2", "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "imported_modules.py"), "--cli", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tensorflow" not in json.loads(done.stdout.splitlines()[-1])
    assert "oneDNN" not in done.stderr
    assert (tmp_path / "run" / "best.keras").exists()


def test_line_bar_prints_every_few_percent_without_escape_codes():
    from buildings.progress import LineBar

    lines = []
    with LineBar(200, "predicting", write=lines.append) as bar:
        for _ in range(200):
            bar.update(1)
    assert len(lines) == 20 and lines[0].startswith("predicting   5% (10/200 images)")
    assert lines[-1].startswith("predicting 100% (200/200 images)") and "ETA 0 s" in lines[-1]
    assert not any("\x1b" in line or "\r" in line for line in lines)


def test_tensorboard_writes_event_files(synth_dataset, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    pytest.importorskip("tensorflow", reason="the tensorboard extra is not installed")
    result = fit(FitConfig(data=str(synth_dataset), epochs=1, tensorboard=True, run_dir=str(tmp_path / "run"), **TINY))
    for part in ("train", "validation"):
        assert list((result.run_dir / "logs" / part).glob("events.out.tfevents.*")), part


def test_tensorboard_missing_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    from buildings.errors import ConfigError
    from buildings.training.callbacks import tensorboard_callback

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs tensorboard: pip install -e \"\.\[tensorboard\]\""):
        tensorboard_callback(tmp_path / "logs")


def test_imagenet_weights_offline_is_one_line_with_the_alternatives(monkeypatch):
    import keras
    from keras.src.utils import file_utils

    from buildings.errors import ConfigError
    from buildings.models.encoders import build_encoder

    def offline(*args, **kwargs):  # what keras.utils.get_file raises without a network
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ConfigError) as caught:
        build_encoder(keras.Input((None, None, 3)), "mobilenetv3small", weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message and "could not download" in message
    assert "--encoder-weights PATH" in message and "--encoder-weights none" in message


def test_data_build_says_what_each_split_got_and_how_validation_was_drawn(synth_contest, tmp_path):
    from click.testing import CliRunner

    from buildings.cli import main
    from buildings.data.splits import open_split

    result = CliRunner().invoke(main, ["data", "build", "--manual-dir", str(synth_contest), "--data-dir",
                                       str(tmp_path / "tfds"), "--config", "val20"])
    assert result.exit_code == 0, result.output
    data = tmp_path / "tfds" / "tianchi_buildings"
    counts = {split: len(open_split(data, split)) for split in ("train", "validation", "test")}
    lines = result.output.splitlines()
    assert lines[0].startswith("built ") and lines[0].endswith("val20/1.0.0"), lines
    assert lines[1] == f"splits: train {counts['train']}, validation {counts['validation']}, test {counts['test']}"
    assert lines[2].startswith("validation: the 20 % of train whose image names hash lowest (md5)"), lines
    again = CliRunner().invoke(main, ["data", "build", "--manual-dir", str(synth_contest), "--data-dir",
                                      str(tmp_path / "tfds"), "--config", "val20"])
    assert again.output.splitlines()[1:] == lines[1:]  # a dataset kept as it is says the same


def test_rerunning_over_existing_output_says_what_it_does(synth_contest, synth_dataset, tmp_path):
    from click.testing import CliRunner

    from buildings.cli import main

    runner = CliRunner()
    build = ["data", "build", "--manual-dir", str(synth_contest), "--data-dir", str(tmp_path / "tfds"),
             "--config", "val20"]
    first, second = runner.invoke(main, build), runner.invoke(main, build)
    assert first.exit_code == 0 and first.output.startswith("built "), first.output
    assert second.exit_code == 0 and second.output.startswith("already built: "), second.output
    assert "--overwrite" in second.output

    run = tmp_path / "run"
    fit(FitConfig(data=str(synth_dataset), epochs=1, run_dir=str(run), **TINY))
    resumed = runner.invoke(main, ["fit", "--resume", str(run)])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming {run} after epoch 1 of 1" in resumed.output and "no epoch left to run" in resumed.output
