"""Callbacks of ``buildings fit`` beyond Keras's own: throughput and learning rate in the logs,
and a wall-time budget."""

from __future__ import annotations

import time

import keras

__all__ = ["Throughput", "TimeBudget"]


class Throughput(keras.callbacks.Callback):
    """Adds ``images_per_s`` (training images per second of the epoch) and ``lr`` to the logs."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            elapsed = time.perf_counter() - self.start
            logs["images_per_s"] = self.batches * self.batch_size / max(elapsed, 1e-9)
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class TimeBudget(keras.callbacks.Callback):
    """Stops training at the end of the epoch after which the next one would exceed the budget."""

    def __init__(self, minutes: float, start: float):
        super().__init__()
        self.seconds = minutes * 60
        self.start = start
        self.epoch_start = start

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if now - self.start + (now - self.epoch_start) > self.seconds:
            self.model.stop_training = True


class EpochCommit(keras.callbacks.Callback):
    """Commits each finished epoch to the run directory (history row, last / best checkpoints,
    backup weights, state; see ``run_dir.RunDirectory.commit_epoch``). Runs last, so the logs it
    writes hold what every other callback added."""

    def __init__(self, run, *, phase: int, monitor: str, export=None):
        super().__init__()
        self.run = run
        self.phase = phase
        self.monitor = monitor
        self.export = export  # the model checkpoints hold (default: the one being trained)

    def on_epoch_end(self, epoch, logs=None):
        self.run.commit_epoch(self.model, epoch=epoch, phase=self.phase, logs=dict(logs or {}), monitor=self.monitor,
                              export=self.export)
