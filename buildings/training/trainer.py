"""Training: one ``fit(config)`` that builds data, model, loss, metrics, optimizer and callbacks,
runs ``model.fit`` on the active backend and writes a run directory (``run_dir``).

Training is staged when ``freeze_encoder_epochs`` > 0: the model's encoder (the sub-model the
model contract names ``encoder``, see ``buildings.models``) is frozen for those epochs (one
``model.fit``), then unfrozen (a second ``model.fit`` with a fresh optimizer whose step count
continues, so the per-step warmup + cosine schedule carries on).
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras

from buildings.data.pipeline import SegmentationBatches
from buildings.data.splits import kfold_sources, open_split
from buildings.errors import ConfigError
from buildings.losses import get_loss
from buildings.models import build_model, get_encoder
from buildings.runtime import install_patches
from buildings.runtime.device import accelerator_available, describe_device
from buildings.task import Task
from buildings.training.callbacks import EpochCommit, LineProgress, RunEstimate, Throughput, TimeBudget
from buildings.config import PRECISIONS, FitConfig, resolve_with_data
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


def _schedule(config: FitConfig, steps_per_epoch: int):
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.lr * 0.01 if warmup else config.lr,
        decay_steps=max(total - warmup, 1), alpha=config.min_lr_ratio,
        warmup_target=config.lr if warmup else None, warmup_steps=warmup)


def _compile(model, config: FitConfig, task: Task, steps_per_epoch: int):
    optimizer = keras.optimizers.AdamW(learning_rate=_schedule(config, steps_per_epoch),
                                       weight_decay=config.weight_decay, global_clipnorm=config.clip_norm)
    options = {"class_weights": list(config.class_weights)} if config.class_weights is not None else {}
    model.compile(optimizer=optimizer, loss=get_loss(config.loss, **options), metrics=task.metrics(config.threshold))
    return model


def _eval_batch_size(model, source, image_size) -> int:
    """Validation images per batch: as many full images as fit the memory budget (validation runs
    on whole stored images, larger than training crops; the training batch size would not fit)."""
    from buildings.data.splits import decode_record
    from buildings.runtime.device import batch_size_for

    if image_size is None:
        height, width = decode_record(source[0])[0].shape[:2]
    else:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return batch_size_for([model], -(-height // 32) * 32, -(-width // 32) * 32)


def _tensorboard(log_dir):
    """Keras's TensorBoard callback, or one clear line when its writer is not installed."""
    import importlib.util

    missing = [name for name in ("tensorflow", "tensorboard") if importlib.util.find_spec(name) is None]
    if missing:  # Keras writes its logs with tf.summary, which needs both (TF 2.21 no longer brings tensorboard)
        raise ConfigError(f"--tensorboard needs {' and '.join(missing)} (Keras writes the logs with tf.summary): "
                          f"pip install -e \".[tensorboard]\"")
    return keras.callbacks.TensorBoard(log_dir=str(log_dir))


def _restore(model, run: RunDirectory, state, phase: int, done_steps: int) -> None:
    """Put a freshly compiled ``model`` where training stopped. Same phase: model and optimizer
    from the backup weights. A new phase (the encoder unfrozen): the model's weights only, with a
    fresh optimizer whose step count continues the schedule."""
    same_phase = state is not None and state.phase == phase
    if same_phase:
        model.optimizer.build(model.trainable_variables)
    if state is not None:
        with warnings.catch_warnings():  # a new phase: Keras warns that it skips the old optimizer's state
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(run.backup_dir / state.weights)
    if not same_phase and done_steps:
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(done_steps)


def fit(config: FitConfig, *, resume: bool = False, command: str | None = None, callbacks=()) -> RunResult:
    """Train as ``config`` says; returns where the run went and how it ended.

    ``resume``: continue the run in ``config.run_dir`` from its last finished epoch. ``callbacks``:
    extra Keras callbacks, run after the package's own in every training phase.
    """
    config.check()
    if resume:
        run = RunDirectory.for_resume(config.run_dir)
    else:
        RunDirectory.check_new(config.run_dir)
    patches = install_patches()
    device = describe_device()
    accelerator = accelerator_available()
    precision = config.precision_for(accelerator)
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    keras.utils.set_random_seed(config.seed)

    train_source = open_split(config.data, "train", config.data_dir)
    val_source = open_split(config.data, "validation", config.data_dir)
    if config.folds:
        train_source, val_source = kfold_sources(train_source, config.folds, config.fold)
    config = resolve_with_data(config, train_source)
    task = train_source.task
    loader = {"workers": config.workers, "use_multiprocessing": config.use_multiprocessing}
    train = SegmentationBatches(train_source, config.batch_size, image_size=config.image_size,
                                augment=config.aug, training=True, seed=config.seed, cutmix=config.cutmix,
                                resize_mode=config.resize_mode, augment_on=config.augment_on_for(accelerator),
                                **loader)
    steps = min(len(train), config.steps_per_epoch or len(train))

    model = build_model(config.model, **config.model_kwargs())
    val_size = None if config.resize_mode == "crop" else config.image_size
    validation = SegmentationBatches(val_source, config.eval_batch_size or _eval_batch_size(model, val_source, val_size),
                                     image_size=val_size, **loader)
    trainer = TrainingModel(model)  # uint8 in, normalised (and augmented) on the device
    encoder = get_encoder(model)
    freeze = config.freeze_encoder_epochs if encoder is not None else 0
    if not resume:
        run = RunDirectory.create(config.run_dir, model=config.model)
    config = dataclasses.replace(config, run_dir=str(run.path))
    run.write_config({
        "options": dataclasses.asdict(config), "backend": keras.backend.backend(), "device": device,
        "precision_policy": PRECISIONS[precision], "versions": package_versions(), "git_commit": git_commit(),
        "keras_patches": patches,
        "command": command, "train_images": len(train_source), "validation_images": len(val_source),
        "parameters": model.count_params()})

    state = run.recover() if resume else None
    start_epoch = state.epoch if state else 0
    if not resume:
        run.reset()
    monitor = task.monitor
    own_callbacks = [keras.callbacks.TerminateOnNaN(), Throughput(config.batch_size)]
    budget = early = None
    if config.max_minutes:
        budget = TimeBudget(config.max_minutes, time.perf_counter())
        own_callbacks.append(budget)
    if config.early_stopping:
        early = keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.early_stopping)
        own_callbacks.append(early)
    if config.tensorboard:
        own_callbacks.append(_tensorboard(run.path / "logs"))
    verbose = config.verbose
    if verbose == "auto":  # Keras's bar on a terminal; plain lines with rate and ETA in logs and CI
        verbose = 1 if sys.stdout.isatty() else 0
        if not verbose:
            own_callbacks.append(LineProgress(steps=steps, batch_size=config.batch_size, epochs=config.epochs))
    if verbose != 0 or config.verbose == "auto":
        own_callbacks.append(RunEstimate(steps=steps, epochs=config.epochs, first_epoch=start_epoch,
                                         accelerator=accelerator))

    started = time.perf_counter()
    phases = [(0, freeze, False), (freeze, config.epochs, True)] if freeze else [(0, config.epochs, True)]
    epochs_run = 0
    for index, (first, last, encoder_trainable) in enumerate(phases):
        if last <= first or start_epoch >= last:
            continue  # nothing to do, or already finished before a resume
        if encoder is not None:
            encoder.trainable = encoder_trainable
        begin = max(first, start_epoch)
        _compile(trainer, config, task, steps)
        if begin == start_epoch and state is not None:  # the first phase of a resumed run
            _restore(trainer, run, state, index, done_steps=begin * steps)
        elif begin:  # a later phase of this call: the weights are in memory, the step count continues
            trainer.optimizer.build(trainer.trainable_variables)
            trainer.optimizer.iterations.assign(begin * steps)
        train.set_epoch(begin)
        # Last, so an epoch is committed only with everything the other callbacks added to its logs.
        commit = EpochCommit(run, phase=index, monitor=monitor, export=model)
        history = trainer.fit(train, validation_data=validation, epochs=last, initial_epoch=begin,
                            steps_per_epoch=steps, callbacks=[*own_callbacks, *callbacks, commit],
                            verbose=verbose)
        epochs_run += len(history.epoch)
        if trainer.stop_training:
            break
    wall = time.perf_counter() - started
    stop_reason = None
    finished = start_epoch + epochs_run
    if finished < config.epochs:
        if budget is not None and budget.reason:
            stop_reason = budget.reason
        elif early is not None and early.stopped_epoch:
            stop_reason = (f"stopped early after epoch {finished}: {monitor} did not improve for "
                           f"{config.early_stopping} epochs (--early-stopping)")
        else:
            stop_reason = f"stopped after epoch {finished}: the loss became NaN or infinite"

    summary = {"epochs_run_this_call": epochs_run, "initial_epoch": start_epoch, "wall_seconds": wall,
               "stop_reason": stop_reason,
               "backend": keras.backend.backend(), "device": device}
    history = run.history()
    if monitor in history and len(history):
        best_row = history.loc[history[monitor].idxmax()]
        summary.update({f"best_{monitor}": float(best_row[monitor]), "best_epoch": int(best_row["epoch"]),
                        "epochs_total": int(history["epoch"].max())})
    if "images_per_s" in history:
        summary["mean_images_per_s"] = float(history["images_per_s"].mean())
    summary = run.write_summary(summary, resumed=resume)
    return RunResult(run_dir=run.path, best_score=summary.get(f"best_{monitor}"), monitor=monitor,
                     best_epoch=summary.get("best_epoch"), epochs_run=epochs_run, initial_epoch=start_epoch,
                     wall_seconds=wall, summary=summary, stop_reason=stop_reason)
