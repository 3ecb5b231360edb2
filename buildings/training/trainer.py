"""Training: ``fit(config)`` trains a model with ``model.fit`` on the active backend and writes a run
directory. It reads as the story of a run, each chapter in its own module:

* the run directory, opened once (``run_dir``: a new run's, or the one to continue, and where
  training starts in it);
* the data (``data``: the train / validation splits, k-fold applied, and their loaders);
* the final options, settled once with what the data decides (``buildings.config.resolve_fit_config``);
* the objective (``objective``: loss, metrics, optimiser and learning-rate schedule);
* the phases (``phases``: the encoder frozen for ``freeze_encoder_epochs``, then trained), every
  epoch committed to the run directory;
* the summary (``summary.json`` and the :class:`RunResult`).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras

from buildings.config import PRECISIONS, FitConfig, resolve_fit_config
from buildings.models import build_model
from buildings.runtime import install_patches
from buildings.runtime.device import accelerator_available, describe_device
from buildings.training.callbacks import RunCallbacks
from buildings.training.data import TrainingData
from buildings.training.distributed import Replicas, replicas_for, start, stop_together
from buildings.training.objective import SchedulePlan, TrainingObjective
from buildings.training.phases import train_phases
from buildings.training.run_dir import RunDirectory, git_commit, package_versions
from buildings.training.training_model import TrainingModel

__all__ = ["RunResult", "fit"]


@dataclass
class RunResult:
    run_dir: Path
    best_score: float | None  # best value of the monitored validation metric
    monitor: str  # val_contest_dice (binary) or val_miou (multi-class)
    best_epoch: int | None
    epochs_run: int
    initial_epoch: int
    wall_seconds: float
    summary: dict
    stop_reason: str | None = None  # why training ended before its last epoch (None: it ran them all)

    @property
    def best_dice(self) -> float | None:
        """The best validation contest Dice of a binary run (None for multi-class runs)."""
        return self.best_score if self.monitor == "val_contest_dice" else None


def fit(config: FitConfig, *, resume: bool = False, command: str | None = None, callbacks=()) -> RunResult:
    """Train as ``config`` says; returns where the run went and how it ended.

    ``resume``: continue the run in ``config.run_dir`` from its last finished epoch. ``callbacks``:
    extra Keras callbacks, run after the package's own in every training phase.
    """
    config.check()
    replicas = start(replicas_for(config.devices, keras.backend.backend()))
    with _run_directory(config, resume, replicas) as run:
        machine = _Machine.set_up(config)
        data = TrainingData.open(config)
        config = resolve_fit_config(config, data.train, run_dir=run.path)
        model = build_model(config.model, **config.model_kwargs())
        batches = data.batches(config, model, accelerator=machine.accelerator, replicas=replicas)
        if replicas.chief:
            if replicas.distributed:
                print(replicas.describe(config.batch_size), flush=True)
            run.write_config(_run_record(config, machine, data, model, command, replicas))
        state = replicas.share(run.start(resume=resume) if replicas.chief else None)
        first_epoch = state.epoch if state else 0
        objective = TrainingObjective(config, data.task, batches.steps,
                                      SchedulePlan(_planned_epochs(run, config) if state else config.epochs))
        own = RunCallbacks(config, monitor=objective.monitor, log_dir=run.path / "logs", steps=batches.steps,
                           first_epoch=first_epoch, accelerator=machine.accelerator, replicas=replicas,
                           plan=objective.plan)
        together = [c for c in [stop_together(replicas)] if c is not None]
        started = time.perf_counter()
        epochs_run = train_phases(TrainingModel(model), objective, batches, run, state=state,
                                  callbacks=[*own.callbacks, *callbacks, *together], verbose=own.verbose,
                                  replicas=replicas)
        wall = time.perf_counter() - started
        stop_reason = own.stop_reason(first_epoch + epochs_run)
        if not replicas.chief:  # rank 0 writes the summary; the others report what they trained
            return RunResult(run_dir=run.path, best_score=None, monitor=objective.monitor, best_epoch=None,
                             epochs_run=epochs_run, initial_epoch=first_epoch, wall_seconds=wall, summary={},
                             stop_reason=stop_reason)
        return _summarise(run, objective.monitor, machine, resume=resume, first_epoch=first_epoch,
                          epochs_run=epochs_run, wall=wall, stop_reason=stop_reason)


def _planned_epochs(run: RunDirectory, config: FitConfig) -> int:
    """The epochs a resumed run's schedule decays over: the plan its last committed epoch logged
    (a wall-time cap planned it), else all of them."""
    history = run.history()
    if "planned_epochs" in history and history["planned_epochs"].notna().any():
        return int(history["planned_epochs"].dropna().iloc[-1])
    return config.epochs


@contextmanager
def _run_directory(config: FitConfig, resume: bool, replicas: Replicas):
    """The run's directory: opened (made, or reopened to resume) by rank 0, whose path the other
    ranks receive; only rank 0 writes in it."""
    if replicas.chief:
        with RunDirectory.for_fit(config.run_dir, resume=resume, model=config.model) as run:
            replicas.share(str(run.path))
            yield run
    else:
        yield RunDirectory(replicas.share(None))


@dataclass(frozen=True)
class _Machine:
    """Where a run trains: the device, whether it is an accelerator, the precision, the Keras patches."""

    device: str
    accelerator: bool
    precision: str
    patches: dict

    @classmethod
    def set_up(cls, config: FitConfig) -> _Machine:
        """Install the Keras patches (``fit`` is an entry point), set the precision policy and the seed."""
        patches = install_patches()
        device = describe_device()
        accelerator = accelerator_available()
        precision = config.precision_for(accelerator)
        keras.mixed_precision.set_global_policy(PRECISIONS[precision])
        keras.utils.set_random_seed(config.seed)
        return cls(device, accelerator, precision, patches)


def _run_record(config: FitConfig, machine: _Machine, data: TrainingData, model, command,
                replicas: Replicas) -> dict:
    """config.json: the final options and what else reproduces the run (see ``run_dir``); ``replicas``:
    the devices and processes, and the batch per device and per step."""
    return {"options": dataclasses.asdict(config), "backend": keras.backend.backend(), "device": machine.device,
            "precision_policy": PRECISIONS[machine.precision], "versions": package_versions(),
            "git_commit": git_commit(), "keras_patches": machine.patches, "command": command,
            "train_images": len(data.train), "validation_images": len(data.validation),
            "parameters": model.count_params(), "replicas": replicas.record(config.batch_size)}


def _summarise(run: RunDirectory, monitor: str, machine: _Machine, *, resume: bool, first_epoch: int,
               epochs_run: int, wall: float, stop_reason: str | None) -> RunResult:
    """Write summary.json (the best epoch from history.csv, over every call of a resumed run)."""
    summary = {"epochs_run_this_call": epochs_run, "initial_epoch": first_epoch, "wall_seconds": wall,
               "stop_reason": stop_reason, "backend": keras.backend.backend(), "device": machine.device}
    history = run.history()
    if monitor in history and len(history):
        best_row = history.loc[history[monitor].idxmax()]
        summary.update({f"best_{monitor}": float(best_row[monitor]), "best_epoch": int(best_row["epoch"]),
                        "epochs_total": int(history["epoch"].max())})
    if "images_per_s" in history:
        summary["mean_images_per_s"] = float(history["images_per_s"].mean())
    summary = run.write_summary(summary, resumed=resume)
    return RunResult(run_dir=run.path, best_score=summary.get(f"best_{monitor}"), monitor=monitor,
                     best_epoch=summary.get("best_epoch"), epochs_run=epochs_run, initial_epoch=first_epoch,
                     wall_seconds=wall, summary=summary, stop_reason=stop_reason)
