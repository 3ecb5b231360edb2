"""buildings fit: run directory contents, config reproduction, staged training, kill -9 and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROOT

from buildings.cli import main
from buildings.config import FitConfig
from buildings.models import load_model
from buildings.training import fit

TINY = {"model": "unet", "model_options": {"filters": 4, "depth": 2}, "image_size": 64, "batch_size": 2,
        "aug": "light", "verbose": 0}


def test_fit_writes_a_complete_run_directory(synth_dataset, tmp_path):
    config = FitConfig(data=str(synth_dataset), epochs=2, run_dir=str(tmp_path / "run"), **TINY)
    result = fit(config)
    run = Path(result.run_dir)
    assert {p.name for p in run.iterdir()} >= {"config.json", "history.csv", "best.keras", "last.keras",
                                                "summary.json"}
    stored = json.loads((run / "config.json").read_text())
    assert stored["options"]["model_options"] == {"filters": 4, "depth": 2}
    assert stored["backend"] == "torch" and stored["device"] == "cpu"
    assert {"keras", "torch", "numpy"} <= set(stored["versions"])
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert {"loss", "val_contest_dice", "val_iou", "images_per_s", "lr"} <= set(history.columns)
    assert (history["images_per_s"] > 0).all()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_contest_dice"] == pytest.approx(history["val_contest_dice"].max())
    assert result.best_epoch == int(history["val_contest_dice"].idxmax())
    model = load_model(run / "best.keras")
    assert model.output_shape[-1] == 1
    with pytest.raises(FileExistsError, match="--resume"):
        fit(config)


def test_fit_from_config_file_with_flag_overrides(synth_dataset, tmp_path):
    first = fit(FitConfig(data=str(synth_dataset), epochs=1, run_dir=str(tmp_path / "a"), **TINY))
    result = CliRunner().invoke(main, ["fit", "--config", str(first.run_dir / "config.json"),
                                       "--run-dir", str(tmp_path / "b"), "--seed", "7"])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "b" / "config.json").read_text())["options"]
    before = json.loads((first.run_dir / "config.json").read_text())["options"]
    assert again["seed"] == 7 and again["epochs"] == 1
    assert {k: v for k, v in again.items() if k not in ("seed", "run_dir")} == \
           {k: v for k, v in before.items() if k not in ("seed", "run_dir")}


def test_staged_training_freezes_then_unfreezes_the_encoder(synth_dataset, tmp_path):
    config = FitConfig(data=str(synth_dataset), epochs=2, freeze_encoder_epochs=1, encoder="mobilenetv3small",
                       run_dir=str(tmp_path / "staged"), **{**TINY, "model_options": {}})
    result = fit(config)
    history = pd.read_csv(result.run_dir / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    model = load_model(result.run_dir / "last.keras")
    assert model.get_layer("mobilenetv3small_encoder").trainable


def test_bad_options_are_clear_errors(synth_dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["fit", "--data", str(synth_dataset), "--loss", "ce", "--run-dir",
                                  str(tmp_path / "x"), "--epochs", "1", "--model-option", "filters=4"])
    assert result.exit_code == 1 and "is for num_classes > 1" in result.output
    result = runner.invoke(main, ["fit", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "y")])
    assert result.exit_code == 1 and "Build it first" in result.output


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_continues_at_the_right_epoch(synth_dataset, tmp_path):
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "buildings.cli", "fit", "--model", "unet", "--model-option", "filters=8",
               "--model-option", "depth=3", "--data", str(synth_dataset), "--epochs", "8", "--batch-size", "2",
               "--image-size", "128", "--run-dir", str(run)]
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metadata = run / "backup" / "phase0" / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text() or '{"epoch": 0}')["epoch"] >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = json.loads(metadata.read_text())["epoch"]
    assert 2 <= finished < 8
    resumed = subprocess.run([sys.executable, "-m", "buildings.cli", "fit", "--resume", str(run)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epochs {finished}..7" in resumed.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["initial_epoch"] == finished and summary["epochs_total"] == 8
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(8))  # every epoch once, none lost or repeated
