"""Callbacks of ``buildings fit`` beyond Keras's own: throughput and learning rate in the logs, a
wall-time budget, the per-epoch commit to the run directory, plain-line progress for logs, and the
run-time estimate after the first steps; :class:`RunCallbacks`: those a run's options ask for, in
order, and why they stopped it."""

from __future__ import annotations

import sys
import time

import keras

from buildings.errors import require
from buildings.progress import Milestones, duration, rate

__all__ = ["EpochCommit", "LineProgress", "RunCallbacks", "RunEstimate", "Throughput", "TimeBudget",
           "tensorboard_callback"]


class Throughput(keras.callbacks.Callback):
    """Adds ``images_per_s`` (training images per second of the epoch) and ``lr`` to the logs."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size  # images a step, over every device

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
    """Stops training at the end of the epoch after which the next one would exceed the budget.

    With ``plan`` (the schedule's ``objective.SchedulePlan``) it also plans the epochs the
    learning rate decays over: after the first epoch of each ``fit`` call (each training phase),
    those that still fit the budget at that epoch's measured time, at most ``epochs``, so a capped run
    ends with a decayed rate. The train step is rebuilt when the plan changes (a traced step holds
    the old one), and each epoch's logs carry ``planned_epochs`` (a resumed run continues the plan)."""

    def __init__(self, minutes: float, start: float, *, plan=None, epochs: int | None = None):
        super().__init__()
        self.minutes = minutes
        self.seconds = minutes * 60
        self.start = start
        self.epoch_start = start
        self.plan, self.epochs = plan, epochs
        self.reason: str | None = None  # why it stopped the run, for the user

    def on_train_begin(self, logs=None):
        self.planned = self.plan is None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        took = now - self.epoch_start
        if not self.planned:
            self.planned = True
            fit = epoch + 1 + max(int((self.seconds - (now - self.start)) // max(took, 1e-9)), 0)
            planned = max(min(self.epochs or fit, fit), epoch + 1)
            if planned != self.plan.epochs:
                self.plan.epochs = planned
                self.model.make_train_function(force=True)
        if self.plan is not None and logs is not None:
            logs["planned_epochs"] = self.plan.epochs
        if now - self.start + took > self.seconds:
            self.model.stop_training = True
            self.reason = (f"stopped after epoch {epoch + 1}: another epoch would pass the {self.minutes:g}-minute "
                           f"budget (--max-minutes)")


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


class LineProgress(keras.callbacks.Callback):
    """Progress for logs and CI (output not a terminal): one plain line per ``every`` share of an
    epoch with its rate and ETA, and one line per finished epoch with its metrics; no escape codes.
    Keras's own bar (verbose 1) redraws with control characters, fine on a terminal only."""

    def __init__(self, *, steps: int, batch_size: int, epochs: int, every: float = 0.05, write=None):
        super().__init__()
        self.steps, self.batch_size, self.epochs, self.every = steps, batch_size, epochs, every
        self.write = write or (lambda line: print(line, flush=True))

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        self.milestones = Milestones(self.steps, self.every)
        self.epoch_number = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1
        if not self.milestones.due(done):
            return
        share = done / self.steps
        elapsed = time.perf_counter() - self.start
        loss = f", loss {logs['loss']:.4f}" if logs and "loss" in logs else ""
        self.write(f"epoch {self.epoch_number}/{self.epochs} {share:4.0%} ({done}/{self.steps} steps), "
                   f"{rate(done * self.batch_size, elapsed, 'images')}, "
                   f"ETA {duration(elapsed / done * (self.steps - done))}{loss}")

    def on_epoch_end(self, epoch, logs=None):
        shown = " ".join(f"{k} {v:.4g}" for k, v in sorted((logs or {}).items()) if isinstance(v, (int, float)))
        self.write(f"epoch {epoch + 1}/{self.epochs} done in {duration(time.perf_counter() - self.start)}: {shown}")


class RunEstimate(keras.callbacks.Callback):
    """After the first steps (the first one compiles and is not counted), says how long an epoch and
    the run will take; on a CPU with a long estimate, says how to get the CPU recipe back."""

    def __init__(self, *, steps: int, epochs: int, first_epoch: int, accelerator: bool, after: int = 3,
                 max_minutes: float | None = None, write=None):
        super().__init__()
        self.steps, self.epochs, self.first_epoch, self.accelerator = steps, epochs, first_epoch, accelerator
        self.max_minutes = max_minutes
        self.after = max(2, min(after, steps))
        self.write = write or (lambda line: print(line, flush=True))
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if self.done:
            return
        if batch == 0:
            self.mark = time.perf_counter()
            return
        if batch + 1 < self.after:
            return
        self.done = True
        per_step = (time.perf_counter() - self.mark) / batch
        epoch = per_step * self.steps
        left = epoch * (self.epochs - self.first_epoch)
        self.write(f"about {per_step:.2f} s a step: an epoch ({self.steps} steps) takes about {duration(epoch)}, "
                   f"the {self.epochs - self.first_epoch} epochs left about {duration(left)} plus validation")
        if self.max_minutes and left > self.max_minutes * 60:
            self.write(f"the {self.max_minutes:g}-minute budget (--max-minutes) ends the run first, after about "
                       f"{max(int(self.max_minutes * 60 // max(epoch, 1e-9)), 1)} epochs (the first steps are the "
                       f"slowest); the learning-rate schedule decays over the epochs that fit")
        elif not self.accelerator and left > 3600:
            self.write("no GPU is visible: leave out the size options given (--image-size, --batch-size, --epochs, "
                       "--model-option ...) to train with the CPU recipe's defaults in about 20 minutes "
                       "(buildings fit --config cpu-quick), or cap this run with --max-minutes")


class RunCallbacks:
    """The package's own callbacks for a run of ``config`` (the epoch commit aside: each phase adds
    its own, last), the Keras ``verbose`` they go with, and why they stopped the run.

    Always NaN termination and throughput; the time budget (``max_minutes``, counted from now; it
    plans ``plan``, the learning-rate schedule's epochs, on one process),
    early stopping on ``monitor`` and TensorBoard logs in ``log_dir`` when asked for.
    ``verbose="auto"``: Keras's bar on a terminal, plain lines with rate and ETA
    (:class:`LineProgress`) in logs and CI; the run-time estimate whenever anything is shown."""

    def __init__(self, config, *, monitor: str, log_dir, steps: int, first_epoch: int, accelerator: bool,
                 replicas=None, plan=None):
        self.config, self.monitor = config, monitor
        self.callbacks = [keras.callbacks.TerminateOnNaN()]
        self.budget = self.early = None
        self.verbose = 0
        if replicas is not None and not replicas.chief:
            return  # rank 0 logs, times and decides when to stop (distributed.stop_together tells the others)
        images = replicas.global_batch(config.batch_size) if replicas is not None else config.batch_size
        self.callbacks.append(Throughput(images))
        if config.max_minutes:  # one process plans the schedule (ranks would disagree on the time)
            one = replicas is None or not replicas.distributed
            self.budget = TimeBudget(config.max_minutes, time.perf_counter(), plan=plan if one else None,
                                     epochs=config.epochs)
            self.callbacks.append(self.budget)
        if config.early_stopping:
            self.early = keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.early_stopping)
            self.callbacks.append(self.early)
        if config.tensorboard:
            self.callbacks.append(tensorboard_callback(log_dir))
        self.verbose = config.verbose
        if self.verbose == "auto":  # Keras's bar on a terminal; plain lines with rate and ETA in logs and CI
            self.verbose = 1 if sys.stdout.isatty() else 0
            if not self.verbose:
                self.callbacks.append(LineProgress(steps=steps, batch_size=images, epochs=config.epochs))
        if self.verbose != 0 or config.verbose == "auto":
            self.callbacks.append(RunEstimate(steps=steps, epochs=config.epochs, first_epoch=first_epoch,
                                              accelerator=accelerator, max_minutes=config.max_minutes))

    def stop_reason(self, finished: int) -> str | None:
        """Why the run ended after epoch ``finished`` (1-based), before its last; None if it ran them all."""
        if finished >= self.config.epochs:
            return None
        if self.budget is not None and self.budget.reason:
            return self.budget.reason
        if self.early is not None and self.early.stopped_epoch:
            return (f"stopped early after epoch {finished}: {self.monitor} did not improve for "
                    f"{self.config.early_stopping} epochs (--early-stopping)")
        return f"stopped after epoch {finished}: the loss became NaN or infinite"


def tensorboard_callback(log_dir) -> keras.callbacks.TensorBoard:
    """Keras's TensorBoard callback, or one clear line when its writer is not installed (Keras writes
    the logs with tf.summary, which needs both; tensorflow-cpu 2.21 no longer brings tensorboard)."""
    require("--tensorboard (Keras writes its logs with tf.summary)", "tensorboard", "tensorflow", "tensorboard")
    return keras.callbacks.TensorBoard(log_dir=str(log_dir))
