"""A run directory written by an earlier version of ``buildings fit`` still resumes.

``tests/fixtures/old_run`` was made with the code of commit 8cd2804 (before ``fit`` was split into
data / objective / run directory / phases), by this script:

    write_synthetic_contest(work / "download", n=12, seed=3)        # as conftest's synth_contest
    dataset = build_dataset(work / "download", work / "tfds", config="val20")
    config = FitConfig(model="unet", model_options={"filters": 4, "depth": 1}, data=str(dataset),
                       image_size=64, batch_size=4, epochs=2, steps_per_epoch=2, aug="light", verbose=0,
                       seed=0, run_dir=str(work / "old_run"))
    fit(config, command=..., callbacks=[a callback raising in on_epoch_end of epoch 2])

The callback runs before the package's epoch commit, so the run crashed during epoch 2 with epoch 1
committed (backup/state.json says 1, history.csv has row 1, best.keras and last.keras are epoch 1's).
curves.png was dropped to keep the fixture small (it is redrawn at every commit).

Its config.json holds absolute paths of the machine that made it: ``options.data`` (the dataset,
long gone) and ``options.run_dir``. Resuming takes the run directory from where it is now, and the
tests pass ``data`` as a flag, which overrides the stored option, pointing at the same synthetic
dataset built afresh (same generator, same seed).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
from click.testing import CliRunner
from helpers import ROOT

from buildings.config import FitConfig, make_fit_config
from buildings.models import load_model
from buildings.training import RunDirectory, fit

FIXTURE = ROOT / "tests" / "fixtures" / "old_run"


def _copy(tmp_path: Path) -> Path:
    run = tmp_path / "old_run"
    shutil.copytree(FIXTURE, run)
    return run


def _check_continued(run: Path, dataset: Path) -> None:
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    state = json.loads((run / "backup" / "state.json").read_text())
    assert (state["epoch"], state["phase"]) == (2, 0) and state["previous"]["epoch"] == 1
    assert load_model(run / "best.keras").output_shape[-1] == 1
    assert load_model(run / "last.keras").output_shape[-1] == 1
    stored = json.loads((run / "config.json").read_text())
    assert stored["options"]["run_dir"] == str(run) and stored["options"]["data"] == str(dataset)
    assert stored["options"]["model_options"] == {"filters": 4, "depth": 1} and stored["options"]["epochs"] == 2
    assert set(stored["options"]) == {f.name for f in dataclasses.fields(FitConfig)}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["initial_epoch"] == 1 and summary["epochs_total"] == 2


# Options added to FitConfig since the fixture was made: the old run has none of them, and each one's
# default keeps the old behaviour (the resume tests below prove the run continues). A removed or
# renamed option still fails the check.
ADDED_SINCE_FIXTURE = {"devices": None, "device_defaults": None, "encoder_lr_scale": 0.1}


def test_the_fixture_is_an_old_run_stopped_after_epoch_1():
    stored = json.loads((FIXTURE / "config.json").read_text())
    fields = {f.name: f.default for f in dataclasses.fields(FitConfig)}
    assert set(stored["options"]) == set(fields) - set(ADDED_SINCE_FIXTURE), \
        "config.json keys changed: old runs would no longer resume"
    assert all(fields[name] == default for name, default in ADDED_SINCE_FIXTURE.items())
    assert RunDirectory(FIXTURE).finished_epochs() == 1
    assert list(pd.read_csv(FIXTURE / "history.csv")["epoch"]) == [1]
    assert not (FIXTURE / "summary.json").exists()


def test_an_old_run_directory_resumes_at_epoch_2(synth_dataset, tmp_path):
    run = _copy(tmp_path)
    config = make_fit_config(flags={"data": str(synth_dataset)}, resume_dir=run)
    assert (config.run_dir, config.epochs, config.model_options) == (str(run), 2, {"filters": 4, "depth": 1})
    result = fit(config, resume=True)
    assert (result.initial_epoch, result.epochs_run, result.stop_reason) == (1, 1, None)
    assert Path(result.run_dir) == run and result.best_epoch in (1, 2)
    _check_continued(run, synth_dataset)


def test_an_old_run_directory_resumes_from_the_command_line(synth_dataset, tmp_path, monkeypatch):
    from buildings.cli import main

    run = _copy(tmp_path)
    opened = []
    real = RunDirectory.for_resume.__func__
    monkeypatch.setattr(RunDirectory, "for_resume", classmethod(lambda cls, p: opened.append(p) or real(cls, p)))
    result = CliRunner().invoke(main, ["fit", "--resume", str(run), "--data", str(synth_dataset)])
    assert result.exit_code == 0, result.output
    assert len(opened) == 1, "the run directory is opened once"
    assert f"resuming {run} after epoch 1 of 2" in result.output
    assert "epochs 2..2 of 2" in result.output
    _check_continued(run, synth_dataset)
