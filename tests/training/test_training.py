"""buildings fit: run directory contents, config reproduction, staged training, kill -9 and resume."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from buildings.cli import main
from buildings.errors import RunDirError
from buildings.models import get_encoder, load_model
from buildings.runtime.device import describe_device
from buildings.training import FitConfig, fit

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
    assert stored["backend"] == "torch" and stored["device"] == describe_device()
    assert {"keras", "torch", "numpy"} <= set(stored["versions"])
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2]  # numbered as Keras's progress bar: "Epoch 1/2"
    assert {"loss", "val_contest_dice", "val_iou", "images_per_s", "lr"} <= set(history.columns)
    assert (history["images_per_s"] > 0).all()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_contest_dice"] == pytest.approx(history["val_contest_dice"].max())
    assert result.best_epoch == int(history["epoch"][history["val_contest_dice"].idxmax()])
    assert result.stop_reason is None and summary["epochs_total"] == 2
    assert (run / "curves.png").stat().st_size > 0
    model = load_model(run / "best.keras")
    assert model.output_shape[-1] == 1
    with pytest.raises(RunDirError, match="--resume"):
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


class WeightsAtEpochEnds(keras.callbacks.Callback):
    """Records (encoder trainable?, encoder weights, decoder weights) at the start and after each epoch."""

    def __init__(self):
        super().__init__()
        self.snapshots = []

    def _snapshot(self):
        encoder = get_encoder(self.model.model)  # fit trains a TrainingModel around the segmentation model
        encoder_ids = {id(v) for v in encoder.weights}
        decoder = [v for v in self.model.model.weights if id(v) not in encoder_ids]
        self.batchnorm = [any(part in v.path for part in ("moving_mean", "moving_variance", "gamma", "beta"))
                          for v in encoder.weights]
        self.snapshots.append((encoder.trainable, [np.array(v.numpy()) for v in encoder.weights],
                               [np.array(v.numpy()) for v in decoder]))

    def on_train_begin(self, logs=None):
        if not self.snapshots:
            self._snapshot()

    def on_epoch_end(self, epoch, logs=None):
        self._snapshot()


def changed(before, after) -> int:
    return sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_staged_training_freezes_then_unfreezes_the_encoder(synth_dataset, tmp_path):
    """Epoch 0 with the encoder frozen must leave every encoder weight (moving statistics
    included) exactly as initialised while the decoder learns; epoch 1 must train the encoder's
    convolutions and leave its BatchNormalization as it was (inference mode after unfreezing)."""
    config = FitConfig(data=str(synth_dataset), epochs=2, freeze_encoder_epochs=1, encoder="mobilenetv3small",
                       run_dir=str(tmp_path / "staged"), **{**TINY, "model_options": {}})
    watch = WeightsAtEpochEnds()
    result = fit(config, callbacks=[watch])
    history = pd.read_csv(result.run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    (_, enc_start, dec_start), (frozen, enc_0, dec_0), (trainable, enc_1, _) = watch.snapshots
    assert frozen is False and trainable is True
    assert changed(enc_start, enc_0) == 0, "a frozen encoder changed during epoch 0"
    assert changed(dec_start, dec_0) > 0, "the decoder did not learn during epoch 0"
    convolutions = [(a, b) for a, b, bn in zip(enc_0, enc_1, watch.batchnorm, strict=True) if not bn]
    norms = [(a, b) for a, b, bn in zip(enc_0, enc_1, watch.batchnorm, strict=True) if bn]
    assert norms and convolutions
    assert changed(*zip(*convolutions)) > len(convolutions) // 2, "the unfrozen encoder did not train in epoch 1"
    assert changed(*zip(*norms)) == 0, "the encoder's BatchNormalization changed after unfreezing"
    model = load_model(result.run_dir / "last.keras")
    assert get_encoder(model).trainable


class StopAfter(keras.callbacks.Callback):
    """Stops the run after epoch ``epochs`` (1-based), as a kill after its commit would."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


class CapPlans(keras.callbacks.Callback):
    """After the first epoch, plans the schedule over ``epochs`` as a wall-time cap that fits only
    those would (runs after the run's own TimeBudget, so its plan is the one that stands)."""

    def __init__(self, plans: list, epochs: int):
        super().__init__()
        self.plans, self.epochs = plans, epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.plans[-1].epochs = self.epochs


def test_a_cap_that_leaves_too_few_epochs_after_the_freeze_keeps_the_encoder_frozen(synth_dataset, tmp_path,
                                                                                    monkeypatch, capsys):
    """A cap that fits 2 of 3 epochs leaves 1 after the frozen one, fewer than a model needs to
    recover from unfreezing (phases.MIN_UNFROZEN_EPOCHS): the encoder stays frozen in every epoch,
    the one line says so, history keeps phase 0, and a run resumed after epoch 2 stays frozen too
    (its plan from history no longer says so; its committed phase does)."""
    from buildings.training import trainer as trainer_module
    from buildings.training.objective import SchedulePlan
    from buildings.training.phases import MIN_UNFROZEN_EPOCHS

    assert 3 - 1 < MIN_UNFROZEN_EPOCHS
    plans = []
    monkeypatch.setattr(trainer_module, "SchedulePlan", lambda epochs: plans.append(SchedulePlan(epochs)) or plans[-1])
    config = FitConfig(data=str(synth_dataset), epochs=3, freeze_encoder_epochs=1, encoder="mobilenetv3small",
                       max_minutes=60, run_dir=str(tmp_path / "capped"), **{**TINY, "model_options": {}, "verbose": 2})
    first, then = WeightsAtEpochEnds(), WeightsAtEpochEnds()
    result = fit(config, callbacks=[first, CapPlans(plans, 2), StopAfter(2)])
    assert "fits 2 of 3 epochs: 1 after the 1 frozen would not recover from unfreezing" in capsys.readouterr().out
    assert [trainable for trainable, _, _ in first.snapshots] == [False, False, False]
    fit(config, resume=True, callbacks=[then])
    history = pd.read_csv(result.run_dir / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3] and list(history["phase"]) == [0, 0, 0]
    (_, enc_start, dec_start), (_, enc_end, dec_end) = first.snapshots[0], then.snapshots[-1]
    assert [trainable for trainable, _, _ in then.snapshots] == [False, False]
    assert changed(enc_start, enc_end) == 0, "the encoder changed although the cap kept it frozen"
    assert changed(dec_start, dec_end) > 0, "the decoder did not learn"
    assert not get_encoder(load_model(result.run_dir / "last.keras")).trainable


def test_bad_options_are_clear_errors(synth_dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["fit", "--data", str(synth_dataset), "--loss", "ce", "--run-dir",
                                  str(tmp_path / "x"), "--epochs", "1", "--model-option", "filters=4"])
    assert result.exit_code == 1 and "is for num_classes > 1" in result.output
    result = runner.invoke(main, ["fit", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "y")])
    assert result.exit_code == 1 and "Build it first" in result.output


def test_run_directories_started_together_are_distinct(tmp_path):
    from buildings.training.run_dir import RunDirectory

    runs = [RunDirectory.create(model="attunet", root=tmp_path) for _ in range(3)]
    assert len({r.path for r in runs}) == 3 and all(r.path.is_dir() for r in runs)
    assert runs[0].path.name.startswith("attunet-") and runs[1].path.name.startswith(runs[0].path.name)
    (runs[0].path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="already holds a run"):
        RunDirectory.create(runs[0].path)


def test_resume_of_a_folder_that_is_not_a_run_is_one_clear_line(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["fit", "--resume", str(tmp_path / "empty")])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'empty'}: no config.json, so not a run directory buildings fit can resume"]
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "config.json").write_text('{"options": {"model": "un')
    result = runner.invoke(main, ["fit", "--resume", str(tmp_path / "truncated")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "config.json: not a readable JSON config" in result.output


def test_model_options_are_checked_before_any_data_is_read(tmp_path):
    runner = CliRunner()
    common = ["fit", "--data", str(tmp_path / "no-data-here"), "--run-dir", str(tmp_path / "r"), "--model", "unet"]
    result = runner.invoke(main, [*common, "--model-option", "filters=wide"])
    assert result.exit_code == 1 and "unet option filters='wide': expected int" in result.output
    result = runner.invoke(main, [*common, "--model-option", "output_stride=8"])
    assert result.exit_code == 1 and "unet does not take 'output_stride'" in result.output
    result = runner.invoke(main, [*common, "--model-option", "filters"])
    assert result.exit_code == 1 and "model option 'filters': expected KEY=VALUE" in result.output
    assert not (tmp_path / "r").exists()
