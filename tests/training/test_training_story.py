"""``fit`` as a story: the final options settled once, the run directory opened once (and left
nowhere when the run is refused), the phases, the package's callbacks and why they stop a run."""

from __future__ import annotations

import json

import keras
import pytest

from buildings.config import FitConfig, make_fit_config, resolve_fit_config
from buildings.data.splits import open_split
from buildings.errors import ConfigError, DatasetNotFoundError
from buildings.training import fit, trainer
from buildings.training.callbacks import LineProgress, RunCallbacks, RunEstimate, Throughput, TimeBudget
from buildings.training.phases import Phase, plan_phases
from buildings.training.run_dir import RunDirectory

TINY = {"model": "unet", "model_options": {"filters": 4, "depth": 1}, "image_size": 64, "batch_size": 2,
        "aug": "light", "verbose": 0, "steps_per_epoch": 1}


def test_resolve_fit_config_adds_what_the_data_decides_and_the_run_dir(synth_dataset, tmp_path):
    source = open_split(synth_dataset, "train")
    options = make_fit_config(flags={"data": str(synth_dataset), "class_weights": "auto"})
    final = resolve_fit_config(options, source, run_dir=tmp_path / "run")
    assert (final.num_classes, final.loss, final.class_weights, final.run_dir) == (1, "bce_dice", None,
                                                                                  str(tmp_path / "run"))
    assert options.num_classes is None and options.loss is None and options.run_dir is None, "options untouched"
    with pytest.raises(ConfigError, match="but num_classes is 3"):
        resolve_fit_config(FitConfig(data=str(synth_dataset), num_classes=3), source, run_dir=tmp_path)
    with pytest.raises(ConfigError, match="is for num_classes > 1"):
        resolve_fit_config(FitConfig(data=str(synth_dataset), loss="ce"), source, run_dir=tmp_path)


def test_fit_resolves_its_options_once_and_records_them(synth_dataset, tmp_path, monkeypatch):
    calls = []
    real = trainer.resolve_fit_config
    monkeypatch.setattr(trainer, "resolve_fit_config", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    result = fit(FitConfig(data=str(synth_dataset), epochs=1, run_dir=str(tmp_path / "run"), **TINY))
    (final,) = calls
    stored = json.loads((result.run_dir / "config.json").read_text())["options"]
    assert stored == json.loads(json.dumps(final.__dict__)), "config.json records the one final config"


def test_a_config_file_run_gets_a_new_directory_unless_a_flag_names_one(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"options": {"model": "unet", "run_dir": "runs/old", "epochs": 3}}))
    assert make_fit_config(config_file=path).run_dir is None
    assert make_fit_config(config_file=path, flags={"run_dir": "runs/new"}).run_dir == "runs/new"
    assert make_fit_config(config_file=path, flags={"seed": 4}).epochs == 3


def test_a_refused_run_leaves_no_directory_behind(synth_dataset, tmp_path, monkeypatch):
    refused = {"data": str(synth_dataset), "loss": "ce", **TINY}  # ce is multi-class; the data is binary
    with pytest.raises(ConfigError, match="is for num_classes > 1"):
        fit(FitConfig(run_dir=str(tmp_path / "a" / "b" / "run"), **refused))
    assert not (tmp_path / "a").exists(), "the folders made for the refused run stay"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="Build it first"):
        fit(FitConfig(**{**refused, "data": str(tmp_path / "nowhere")}))  # run_dir None: runs/<model>-<time>
    assert not (tmp_path / "runs").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ConfigError):
        fit(FitConfig(run_dir=str(tmp_path / "kept"), **refused))
    assert (tmp_path / "kept").is_dir(), "a folder that was there before is not removed"


def test_resuming_opens_the_run_directory_once(synth_dataset, tmp_path, monkeypatch):
    first = fit(FitConfig(data=str(synth_dataset), epochs=1, run_dir=str(tmp_path / "run"), **TINY))
    opened = []
    real = RunDirectory.for_resume.__func__
    monkeypatch.setattr(RunDirectory, "for_resume", classmethod(lambda cls, p: opened.append(p) or real(cls, p)))
    config = make_fit_config(flags={"epochs": 2}, resume_dir=first.run_dir)
    result = fit(config, resume=True)
    assert (result.initial_epoch, result.epochs_run) == (1, 1) and len(opened) == 1


def test_phases_freeze_the_encoder_first():
    assert plan_phases(5, 0) == [Phase(0, 0, 5, True)]
    assert plan_phases(5, 2) == [Phase(0, 0, 2, False), Phase(1, 2, 5, True)]
    assert plan_phases(1, 2) == [Phase(0, 0, 1, False), Phase(1, 1, 1, True)], "never longer than the epochs asked"


def _callbacks(tmp_path, **options):
    return RunCallbacks(FitConfig(**options), monitor="val_contest_dice", log_dir=tmp_path / "logs", steps=4,
                        first_epoch=0, accelerator=False)


def test_run_callbacks_come_in_order_and_say_why_a_run_stopped(tmp_path):
    own = _callbacks(tmp_path, epochs=10, max_minutes=5, early_stopping=2, verbose="auto")
    assert [type(c) for c in own.callbacks] == [keras.callbacks.TerminateOnNaN, Throughput, TimeBudget,
                                                keras.callbacks.EarlyStopping, LineProgress, RunEstimate]
    assert own.verbose == 0  # pytest's stdout is not a terminal: plain lines, no Keras bar
    assert own.stop_reason(10) is None
    assert own.stop_reason(4) == "stopped after epoch 4: the loss became NaN or infinite"
    own.early.stopped_epoch = 3
    assert own.stop_reason(4) == ("stopped early after epoch 4: val_contest_dice did not improve for 2 epochs "
                                  "(--early-stopping)")
    own.budget.reason = "stopped after epoch 4: another epoch would pass the 5-minute budget (--max-minutes)"
    assert own.stop_reason(4) == own.budget.reason
    quiet = _callbacks(tmp_path, verbose=0)
    assert [type(c) for c in quiet.callbacks] == [keras.callbacks.TerminateOnNaN, Throughput]
    assert [type(c) for c in _callbacks(tmp_path, verbose=2).callbacks][-1] is RunEstimate
