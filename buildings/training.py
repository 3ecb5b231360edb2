"""Training: one ``fit(config)`` that builds data, model, loss, metrics, optimizer and callbacks,
runs ``model.fit`` on the active backend and writes a run directory.

A run directory (``runs/<name>/``) holds everything needed to understand and reproduce a run:

* ``config.json``  every option, plus package versions, backend, device, git commit, command;
* ``history.csv``  one row per epoch (losses, metrics, learning rate, images/s);
* ``best.keras``   the checkpoint with the best validation contest Dice; ``last.keras`` the latest;
* ``summary.json`` best validation Dice, its epoch, wall time, throughput;
* ``backup/``      Keras's BackupAndRestore state while a run is unfinished (``--resume`` uses it).

Training is staged when ``freeze_encoder_epochs`` > 0: the encoder is frozen for those epochs
(one ``model.fit``), then unfrozen (a second ``model.fit`` with a fresh optimizer whose step count
continues, so the per-step warmup + cosine schedule carries on).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import buildings
from buildings.config import PRECISIONS, FitConfig
from buildings.data.pipeline import SegmentationBatches, open_split
from buildings.losses import MULTICLASS_LOSSES, get_loss
from buildings.metrics import binary_metrics, multiclass_metrics
from buildings.models import build_model, model_options, torch_speedups

__all__ = ["FitConfig", "RunResult", "describe_device", "fit", "load_run_config"]

@dataclass
class RunResult:
    run_dir: Path
    best_dice: float | None
    best_epoch: int | None
    epochs_run: int
    initial_epoch: int
    wall_seconds: float
    summary: dict


def describe_device() -> str:
    """The device the active backend computes on, in words."""
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"cuda:0 ({torch.cuda.get_device_name(0)})"
            return "cpu"
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            return f"{device.platform}:{device.id} ({getattr(device, 'device_kind', '')})"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"gpu ({gpus[0].name})" if gpus else "cpu"
    except Exception as err:  # pragma: no cover - informational only
        return f"unknown ({err})"
    return "unknown"


def _versions() -> dict:
    versions = {"buildings": buildings.__version__, "keras": keras.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    for module in ("torch", "jax", "tensorflow", "tensorflow_datasets", "albumentations", "cv2"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "?")
    return versions


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


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
            optimizer = self.model.optimizer
            lr = optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))


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


def _model_kwargs(config: FitConfig) -> dict:
    options = dict(config.model_options)
    options["num_classes"] = config.num_classes
    accepted = model_options(config.model.lower())
    if config.encoder is not None:
        options["encoder"] = config.encoder
    if config.encoder_weights is not None:
        options["encoder_weights"] = config.encoder_weights
    unknown = sorted(set(options) - set(accepted) - {"decoder_attention"})
    if unknown:
        raise ValueError(f"model {config.model} does not take {unknown}")
    return options


def _encoder_layer(model: keras.Model):
    for layer in model.layers:
        if layer.name.endswith("_encoder") and isinstance(layer, keras.Model):
            return layer
    return None


def _schedule(config: FitConfig, steps_per_epoch: int):
    total = max(config.epochs * steps_per_epoch, 1)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.lr * 0.01 if warmup else config.lr,
        decay_steps=max(total - warmup, 1), alpha=config.min_lr_ratio,
        warmup_target=config.lr if warmup else None, warmup_steps=warmup)


def _loss(config: FitConfig):
    options = {}
    if config.num_classes > 1 and config.class_weights is not None and config.loss in ("ce", "ce_lovasz"):
        options["class_weights"] = list(config.class_weights)
    return get_loss(config.loss, **options)


def _compile(model, config: FitConfig, steps_per_epoch: int, done_steps: int = 0, class_names=()):
    optimizer = keras.optimizers.AdamW(learning_rate=_schedule(config, steps_per_epoch),
                                       weight_decay=config.weight_decay, global_clipnorm=config.clip_norm)
    if config.num_classes == 1:
        metrics = binary_metrics(config.threshold)
    else:
        metrics = multiclass_metrics(config.num_classes, class_names)
    model.compile(optimizer=optimizer, loss=_loss(config), metrics=metrics)
    if done_steps:
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(done_steps)
    return model


def _truncate_history(path: Path, first_epoch: int) -> None:
    """Drop rows for epochs >= first_epoch (written before a kill, to be redone)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    if not lines:
        return
    kept = [lines[0]] + [row for row in lines[1:] if row and int(row.split(",")[0]) < first_epoch]
    path.write_text("\n".join(kept) + "\n")


def _backup_epoch(backup_dir: Path) -> int:
    """Epochs finished according to BackupAndRestore's state (one folder per training phase)."""
    epochs = [int(json.loads(meta.read_text())["epoch"])
              for meta in backup_dir.glob("phase*/training_metadata.json")]
    return max(epochs, default=0)


def _check(config: FitConfig) -> None:
    """Option combinations that cannot work, refused before any data is read."""
    if config.precision not in (*PRECISIONS, "auto"):
        raise ValueError(f"precision must be one of {list(PRECISIONS)} or auto, got {config.precision!r}")
    if config.image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32, got {config.image_size}")
    if config.num_classes is not None:
        _check_classes(config)


def class_weights_from_counts(counts) -> list[float]:
    """Weights ∝ 1/sqrt(pixel frequency), scaled so that the pixel-weighted mean weight is 1 (the
    loss keeps its scale); a class with no training pixel gets the largest weight of the others."""
    counts = np.asarray(counts, np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    present = frequency > 0
    weights = np.zeros_like(frequency)
    weights[present] = frequency[present] ** -0.5
    weights /= max(float((frequency * weights).sum()), 1e-12)
    weights[~present] = weights[present].max() if present.any() else 1.0
    return [round(float(w), 4) for w in weights]


def _resolve_classes(config: FitConfig, source) -> FitConfig:
    """Fill in ``num_classes``, ``loss`` and ``class_weights`` from the dataset; refuse a mismatch."""
    stored = source.num_classes
    num_classes = stored if config.num_classes is None else config.num_classes
    if num_classes != stored:
        kind = "binary ({0, 1} masks)" if stored == 1 else f"{stored} classes"
        raise ValueError(f"{config.data} is {kind}, but num_classes is {num_classes}: pass --num-classes "
                         f"{stored} (or leave it out to take the dataset's)")
    loss = config.loss or ("bce_dice" if num_classes == 1 else "ce_lovasz")
    weights = config.class_weights
    if num_classes == 1 or loss not in ("ce", "ce_lovasz") or weights in (None, "none"):
        weights = None
    elif weights == "auto":
        from buildings.data.inspect import class_pixel_counts

        weights = class_weights_from_counts(class_pixel_counts(source, num_classes))
    else:
        weights = [float(w) for w in (weights.split(",") if isinstance(weights, str) else weights)]
        if len(weights) != num_classes or min(weights) < 0:
            raise ValueError(f"class_weights needs {num_classes} non-negative numbers, got {config.class_weights}")
    config = dataclasses.replace(config, num_classes=num_classes, loss=loss, class_weights=weights)
    _check_classes(config)
    return config


def _check_classes(config: FitConfig) -> None:
    if config.num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {config.num_classes}")
    if config.loss is None:
        return
    if config.num_classes == 1 and config.loss in MULTICLASS_LOSSES:
        raise ValueError(f"loss {config.loss!r} is for num_classes > 1")
    if config.num_classes > 1 and config.loss not in MULTICLASS_LOSSES:
        raise ValueError(f"loss {config.loss!r} is binary; with num_classes > 1 use one of {MULTICLASS_LOSSES}")


def fit(config: FitConfig, *, resume: bool = False, command: str | None = None) -> RunResult:
    """Train as ``config`` says; returns where the run went and how it ended."""
    _check(config)
    device = describe_device()
    precision = config.precision
    if precision == "auto":
        precision = "fp32" if device == "cpu" else "bf16"
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    keras.utils.set_random_seed(config.seed)

    run_dir = Path(config.run_dir or f"runs/{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not resume and (run_dir / "config.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, "
                              "or another --run-dir")
    train_source = open_split(config.data, "train", config.data_dir)
    val_source = open_split(config.data, "validation", config.data_dir)
    config = _resolve_classes(config, train_source)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, run_dir=str(run_dir))
    loader = {"workers": config.workers, "use_multiprocessing": config.use_multiprocessing}
    train = SegmentationBatches(train_source, config.batch_size, image_size=config.image_size,
                                augment=config.aug, training=True, seed=config.seed, cutmix=config.cutmix,
                                resize_mode=config.resize_mode, **loader)
    val_size = None if config.resize_mode == "crop" else config.image_size
    validation = SegmentationBatches(val_source, config.batch_size, image_size=val_size, **loader)
    steps = min(len(train), config.steps_per_epoch or len(train))

    model = build_model(config.model, **_model_kwargs(config))
    encoder = _encoder_layer(model)
    freeze = config.freeze_encoder_epochs if encoder is not None else 0

    _write_json(run_dir / "config.json", {
        "options": dataclasses.asdict(config), "backend": keras.backend.backend(), "device": device,
        "precision_policy": PRECISIONS[precision], "versions": _versions(), "git_commit": _git_commit(),
        "torch_speedups": torch_speedups.installed() if keras.backend.backend() == "torch" else None,
        "command": command, "train_images": len(train_source), "validation_images": len(val_source),
        "parameters": model.count_params()})

    backup_dir = run_dir / "backup"
    history_path = run_dir / "history.csv"
    start_epoch = _backup_epoch(backup_dir) if resume else 0
    if resume:
        _truncate_history(history_path, start_epoch)
    elif history_path.exists():
        history_path.unlink()
    best_so_far = None
    if resume and history_path.exists():
        import pandas as pd

        history = pd.read_csv(history_path)
        if "val_contest_dice" in history and len(history):
            best_so_far = float(history["val_contest_dice"].max())

    monitor, mode = ("val_contest_dice", "max") if config.num_classes == 1 else ("val_miou", "max")
    best_checkpoint = keras.callbacks.ModelCheckpoint(
        run_dir / "best.keras", monitor=monitor, mode=mode, save_best_only=True,
        initial_value_threshold=best_so_far)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        Throughput(config.batch_size),
        best_checkpoint,
        keras.callbacks.ModelCheckpoint(run_dir / "last.keras"),
        keras.callbacks.CSVLogger(str(history_path), append=True),
    ]
    if config.max_minutes:
        callbacks.append(TimeBudget(config.max_minutes, time.perf_counter()))
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode,
                                                       patience=config.early_stopping))
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")))

    started = time.perf_counter()
    phases = [(0, freeze, False), (freeze, config.epochs, True)] if freeze else [(0, config.epochs, True)]
    epochs_run = 0
    for index, (first, last, encoder_trainable) in enumerate(phases):
        if last <= first or start_epoch >= last:
            continue  # nothing to do, or already finished before a resume
        if encoder is not None:
            encoder.trainable = encoder_trainable
        begin = max(first, start_epoch)
        if begin > 0 and (run_dir / "last.keras").exists() and not (backup_dir / f"phase{index}").exists():
            model.load_weights(run_dir / "last.keras")  # a new phase starts from the last epoch
        _compile(model, config, steps, done_steps=begin * steps, class_names=train_source.class_names)
        train.set_epoch(begin)
        # Last, so an epoch counts as finished only once its history row and checkpoints are written.
        backup = keras.callbacks.BackupAndRestore(str(backup_dir / f"phase{index}"), delete_checkpoint=False)
        history = model.fit(train, validation_data=validation, epochs=last, initial_epoch=begin,
                            steps_per_epoch=steps, callbacks=[*callbacks, backup], verbose=config.verbose)
        epochs_run += len(history.epoch)
        if model.stop_training:
            break
    wall = time.perf_counter() - started

    summary = {"epochs_run_this_call": epochs_run, "initial_epoch": start_epoch, "wall_seconds": wall,
               "backend": keras.backend.backend(), "device": device}
    if history_path.exists():
        import pandas as pd

        history = pd.read_csv(history_path)
        if monitor in history and len(history):
            best_row = history.loc[history[monitor].idxmax()]
            summary.update({f"best_{monitor}": float(best_row[monitor]), "best_epoch": int(best_row["epoch"]),
                            "epochs_total": int(history["epoch"].max()) + 1})
        if "images_per_s" in history:
            summary["mean_images_per_s"] = float(history["images_per_s"].mean())
    previous = run_dir / "summary.json"
    if resume and previous.exists():
        summary["wall_seconds_total"] = json.loads(previous.read_text()).get("wall_seconds_total", 0) + wall
    else:
        summary["wall_seconds_total"] = wall
    _write_json(run_dir / "summary.json", summary)
    best = summary.get(f"best_{monitor}")
    return RunResult(run_dir=run_dir, best_dice=best, best_epoch=summary.get("best_epoch"),
                     epochs_run=epochs_run, initial_epoch=start_epoch, wall_seconds=wall, summary=summary)


def load_run_config(path) -> FitConfig:
    """The options stored in a run's config.json (or a plain options JSON file)."""
    payload = json.loads(Path(path).read_text())
    options = payload.get("options", payload)
    return FitConfig.from_dict(options)


