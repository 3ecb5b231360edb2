"""Training options as data: a run's config.json reproduces it. Kept free of heavy imports so the
command line can show its options without loading Keras."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["PRECISIONS", "FitConfig"]

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


@dataclass
class FitConfig:
    """Every option of a training run (``buildings fit`` flags map one to one)."""

    model: str = "attunet"
    data: str = "tianchi_buildings"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 8
    image_size: int = 512
    resize_mode: str = "crop"  # crop: random crops in training, full images in validation
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip_norm: float = 1.0
    loss: str | None = None  # None: bce_dice for binary data, ce_lovasz for multi-class
    aug: str = "strong"
    cutmix: float = 0.0
    precision: str = "auto"  # auto: bf16 on a GPU, fp32 on CPU
    encoder: str | None = None  # None: the model's default
    encoder_weights: str | None = None
    freeze_encoder_epochs: int = 0
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

    @classmethod
    def from_dict(cls, values: dict) -> FitConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**values)
