"""Training options as data (no Keras here: the command line shows them): a run's config.json reproduces it.

:class:`FitConfig` holds every option of ``buildings fit`` (flags map one to one). A run's options
are settled in two steps, each making one FitConfig:

1. :func:`make_fit_config`: the options asked for, flags over a config file or the run being resumed;
   :meth:`FitConfig.check` refuses impossible ones before any data is read;
2. :func:`resolve_fit_config` (called by ``fit``, once): the final options, with what the training
   data decides (classes, loss, class weights) and the run directory's path. That is what the run's
   config.json records, and nothing changes it afterwards.

Kept free of heavy imports at module level so the command line shows its options without loading
Keras.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from buildings.contract import check_stride_multiple
from buildings.errors import ConfigError, RunDirError
from buildings.task import Task

__all__ = ["PRECISIONS", "FitConfig", "load_run_config", "make_fit_config", "parse_model_options",
           "resolve_fit_config"]

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
RESIZE_MODES = ("crop", "resize")
# The names the options take; their homes use these (buildings.models registers one builder each).
ARCHITECTURES = ("unet", "attunet", "deeplabv3plus", "fcn")
AUGMENTATIONS = ("none", "light", "strong")
AUGMENT_ON = ("cpu", "device")


@dataclass
class FitConfig:
    """Every option of a training run (``buildings fit`` flags map one to one)."""

    model: str = "attunet"
    data: str = "tianchi_buildings"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 8
    eval_batch_size: int | None = None  # validation; None: as many full images as fit the memory budget
    image_size: int = 512
    resize_mode: str = "crop"  # crop: random crops in training, full images in validation
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip_norm: float = 1.0
    loss: str | None = None  # None: the task's default (bce_dice binary, ce_lovasz multi-class)
    aug: str = "strong"
    augment_on: str = "auto"  # cpu (albumentations in the loader workers), device (in the step), auto
    cutmix: float = 0.0
    precision: str = "auto"  # auto: bf16 on a GPU, fp32 on CPU
    encoder: str | None = None  # None: the model's default
    encoder_weights: str | None = None
    freeze_encoder_epochs: int = 0
    encoder_lr_scale: float = 0.1  # a pretrained encoder's learning rate, as a share of lr (objective.py)
    model_options: dict = field(default_factory=dict)
    num_classes: int | None = None  # None: the dataset's (1 = binary logit, N = N classes)
    class_weights: str | list | None = "auto"  # multi-class CE: auto (from train pixels), none, or a list
    threshold: float = 0.5
    seed: int = 0
    steps_per_epoch: int | None = None
    early_stopping: int = 0  # patience in epochs; 0 = off
    tensorboard: bool = False
    max_minutes: float | None = None  # stop after the epoch that crosses this wall-time budget
    workers: int = 1
    use_multiprocessing: bool = False
    run_dir: str | None = None
    verbose: str | int = "auto"
    devices: int | str | None = None  # data-parallel devices: N or "all" (buildings.training.distributed)
    folds: int | None = None  # k-fold: train on the training images outside fold `fold` (1..folds),
    fold: int | None = None   # validate on fold `fold` (buildings.data.splits.kfold_sources)
    # What the machine's recipe filled into these options (buildings.recipes.Filled.record), in this run
    # or the run whose config.json they were copied from; None: nothing was filled.
    device_defaults: dict | None = None

    @classmethod
    def from_dict(cls, values: dict) -> FitConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}")
        return cls(**values)

    def check(self) -> None:
        """Refuse options that cannot work, before any data is read (model options included)."""
        from buildings.models import resolve_options

        if self.precision not in (*PRECISIONS, "auto"):
            raise ConfigError(f"precision must be one of {list(PRECISIONS)} or auto, got {self.precision!r}")
        check_stride_multiple(self.image_size, "image_size")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.aug not in AUGMENTATIONS:
            raise ConfigError(f"augmentation must be one of {AUGMENTATIONS}, got {self.aug!r}")
        if self.augment_on not in ("auto", *AUGMENT_ON):
            raise ConfigError(f"augment_on must be auto, cpu or device, got {self.augment_on!r}")
        if self.num_classes is not None:
            task = Task(self.num_classes)
            if self.loss is not None:
                task.check_loss(self.loss)
        if (self.folds is None) != (self.fold is None):
            raise ConfigError("--folds and --fold go together: --folds N --fold K trains fold K (1..N)")
        if self.folds is not None and not (self.folds >= 2 and 1 <= self.fold <= self.folds):
            raise ConfigError(f"--fold must be 1..--folds (at least 2 folds), got fold {self.fold} of {self.folds}")
        if not 0 < self.encoder_lr_scale <= 1:
            raise ConfigError(f"encoder_lr_scale must be in (0, 1], got {self.encoder_lr_scale!r}")
        if self.devices is not None and self.devices != "all" and not (isinstance(self.devices, int)
                                                                        and self.devices >= 1):
            raise ConfigError(f"devices must be a positive number or 'all', got {self.devices!r}")
        resolve_options(self.model, **self.model_kwargs())

    def model_kwargs(self) -> dict:
        """Options for ``buildings.models.build_model``: ``model_options`` plus the flags that are
        model options (classes, encoder, encoder weights)."""
        options = dict(self.model_options)
        if self.num_classes is not None:
            options["num_classes"] = self.num_classes
        if self.encoder is not None:
            options["encoder"] = self.encoder
        if self.encoder_weights is not None:
            options["encoder_weights"] = self.encoder_weights
        return options

    def augment_on_for(self, accelerator: bool) -> str:
        """Where augmentation runs: ``auto`` is on the device with an accelerator, in the CPU
        workers without one (measured: experiments/RESULTS.md, "Input-bound benchmark")."""
        if self.augment_on == "auto":
            return "device" if accelerator else "cpu"
        return self.augment_on

    def precision_for(self, accelerator: bool) -> str:
        """The precision to train in: ``auto`` is bf16 on an accelerator and fp32 on a CPU."""
        if self.precision == "auto":
            return "bf16" if accelerator else "fp32"
        return self.precision


def parse_model_options(items) -> dict:
    """``["filters=32", "decoder_attention=cbam"]`` → {"filters": 32, "decoder_attention": "cbam"};
    values are read as JSON when they parse (numbers, lists, true/false), else kept as text."""
    options = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        if not sep or not key:
            raise ConfigError(f"model option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def read_options(path) -> dict:
    """The options stored in a run's config.json, a recipe or a plain options JSON file, as given
    there (``FitConfig`` names → values; :meth:`FitConfig.from_dict` checks the names)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{path}: not a readable JSON config ({err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("options", payload), dict):
        raise RunDirError(f"{path}: expected a JSON object of options")
    return dict(payload.get("options", payload))


def load_run_config(path) -> FitConfig:
    """The options stored in a run's config.json (or a plain options JSON file)."""
    return FitConfig.from_dict(read_options(path))


def make_fit_config(*, flags: dict | None = None, model_options=(), config_file=None, resume_dir=None,
                    accelerator: bool | None = None) -> FitConfig:
    """The options of a ``buildings fit`` call (step 1 of the module docstring).

    ``flags``: the options given explicitly (field name → value); they override ``config_file``
    (a recipe name, or a JSON file of options such as a run's config.json, reproduced in a new run
    directory) or the options of the run in ``resume_dir`` (continued in place). ``model_options``:
    ``KEY=VALUE`` items merged over the base's model options. ``accelerator`` (True or False; a new
    run only): the options given nowhere are filled from that machine's recipe
    (``buildings.recipes.device_defaults``) and the fill is recorded in ``device_defaults``; None
    leaves ``FitConfig``'s defaults.
    """
    from buildings.recipes import device_defaults, recipe_file

    flags = dict(flags or {})
    if resume_dir is not None:
        from buildings.training.run_dir import RunDirectory

        base = load_run_config(RunDirectory.check_resumable(resume_dir))
        flags["run_dir"] = str(resume_dir)
        given = None  # a resumed run keeps its options
    else:
        given = read_options(recipe_file(config_file)) if config_file is not None else {}
        base = FitConfig.from_dict({**given, "run_dir": None} if config_file is not None else {})
        given = {**given, **flags}
    if model_options:
        flags["model_options"] = {**base.model_options, **parse_model_options(model_options)}
    config = dataclasses.replace(base, **flags)
    if given is not None and accelerator is not None:
        given["model_options"] = {**given.get("model_options", {}), **parse_model_options(model_options)}
        if not given["model_options"]:
            del given["model_options"]
        filled = device_defaults(given, accelerator=accelerator)
        if filled.options:  # else the options keep the record they came with (a run's config.json)
            config = dataclasses.replace(config, **filled.options, device_defaults=filled.record())
    return config


def resolve_fit_config(config: FitConfig, source, *, run_dir) -> FitConfig:
    """The final options of a run (step 2 of the module docstring), made once: ``config`` with what
    the training split ``source`` decides — ``num_classes``, ``loss`` (the task's default when
    none is asked for) and ``class_weights`` (computed from its pixels when ``auto``) — and
    ``run_dir``, the path of the run's directory. Refuses a class count or loss that does not fit
    the dataset."""
    data_task = source.task
    task = data_task if config.num_classes is None else Task(config.num_classes)
    if task.num_classes != data_task.num_classes:
        raise ConfigError(f"{config.data} is {data_task.describe()}, but num_classes is {task.num_classes}: pass "
                          f"--num-classes {data_task.num_classes} (or leave it out to take the dataset's)")
    loss = config.loss or task.default_loss
    task.check_loss(loss)
    return dataclasses.replace(config, num_classes=task.num_classes, loss=loss,
                               class_weights=_class_weights(config, task, loss, source), run_dir=str(run_dir))


def _class_weights(config: FitConfig, task: Task, loss: str, source) -> list[float] | None:
    """Per-class loss weights: None where the loss takes none; ``auto``: from the pixels of ``source``."""
    weights = config.class_weights
    if not task.uses_class_weights(loss) or weights in (None, "none"):
        return None
    if weights == "auto":
        from buildings.data.stats import class_pixel_counts
        from buildings.losses import class_weights_from_counts

        return class_weights_from_counts(class_pixel_counts(source, task.num_classes))
    try:
        weights = [float(w) for w in (weights.split(",") if isinstance(weights, str) else weights)]
    except (TypeError, ValueError):
        weights = []
    if len(weights) != task.num_classes or min(weights) < 0:
        raise ConfigError(f"class_weights needs {task.num_classes} non-negative numbers, got {config.class_weights}")
    return weights
