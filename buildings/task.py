"""Binary vs N classes: the one place that knows the difference.

A model and a dataset each have a :class:`Task`, built from their number of classes:

* ``Task(1)``, **binary** (the Tianchi contest): one logit per pixel, masks in {0, 1},
  probabilities by sigmoid, masks by a threshold (``inference.prediction.MaskRule``), the contest Dice as the score and the monitored
  metric, an RLE file as the submission, min-area / hole filling as post-processing.
* ``Task(N)``, N ≥ 2, **N classes** (the 地块分割 contests): N logits per pixel, masks of class
  indices with 255 = unlabelled (ignored by every loss, metric and score, and the padding value),
  probabilities by softmax, masks by argmax, mean IoU as the score, a ``result.zip`` of label PNGs
  as the submission.

Everything else — input pipeline, training, prediction, evaluation, the command line — asks its
Task instead of testing ``num_classes`` itself. The module is NumPy-only (Keras is imported only by
:meth:`Task.metrics`), so anything can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from buildings.errors import ConfigError

__all__ = ["BINARY_LOSSES", "IGNORE_INDEX", "MULTICLASS_LOSSES", "OUTPUT_FORMATS", "Task"]

IGNORE_INDEX = 255  # unlabelled pixels in multi-class masks; never a class index, never predicted
BINARY_LOSSES = ("bce", "dice", "bce_dice", "lovasz_hinge", "focal")
MULTICLASS_LOSSES = ("ce", "lovasz_softmax", "multiclass_dice", "ce_lovasz")
WEIGHTED_LOSSES = ("ce", "ce_lovasz")  # the losses that take per-class weights
OUTPUT_FORMATS = ("rle", "png-zip")


@dataclass(frozen=True)
class Task:
    """What a model predicts / a dataset labels: 1 = binary (one logit), N ≥ 2 = N classes.

    Args:
        num_classes: 1 for a binary task, or the number of classes (2..255: indices 0..254, 255 stays
            the unlabelled value).
        class_names: names of the classes (multi-class), used in metric names and reports; the
            binary task's scored classes are ``background`` and ``building``.
    """

    num_classes: int
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)) \
                or not 1 <= self.num_classes <= IGNORE_INDEX:
            raise ConfigError(f"num_classes must be 1 (binary) or 2..{IGNORE_INDEX}, got {self.num_classes!r}")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        names = tuple(self.class_names)
        if self.binary or len(names) != self.num_classes:
            names = ("building",) if self.binary else tuple(f"class{i}" for i in range(self.num_classes))
        object.__setattr__(self, "class_names", names)

    # -- what it is ----------------------------------------------------------------------------
    @property
    def binary(self) -> bool:
        """One logit, {0, 1} masks."""
        return self.num_classes == 1

    def describe(self) -> str:
        return "binary ({0, 1} masks)" if self.binary else f"{self.num_classes} classes"

    @property
    def score_classes(self) -> int:
        """Classes of the confusion matrix: a binary task is scored as background / building."""
        return max(2, self.num_classes)

    @property
    def score_class_names(self) -> tuple[str, ...]:
        return ("background", "building") if self.binary else self.class_names

    def check_same(self, other: Task, what: str, other_what: str) -> None:
        """Refuse a model of one task on data (or a model) of another, naming both."""
        if self.num_classes != other.num_classes:
            raise ConfigError(f"{what} is {self.describe()} but {other_what} is {other.describe()}")

    # -- data ----------------------------------------------------------------------------------
    @property
    def mask_fill(self) -> int:
        """Value of padded mask pixels: background for binary, ignored for N classes."""
        return 0 if self.binary else IGNORE_INDEX

    def mask_values(self) -> set[int]:
        """Every value a stored mask may hold."""
        return {0, 1} if self.binary else {*range(self.num_classes), IGNORE_INDEX}

    # -- training ------------------------------------------------------------------------------
    @property
    def default_loss(self) -> str:
        return "bce_dice" if self.binary else "ce_lovasz"

    @property
    def losses(self) -> tuple[str, ...]:
        return BINARY_LOSSES if self.binary else MULTICLASS_LOSSES

    def check_loss(self, loss: str) -> None:
        if loss in self.losses:
            return
        if loss in BINARY_LOSSES + MULTICLASS_LOSSES:
            if self.binary:
                raise ConfigError(f"loss {loss!r} is for num_classes > 1; a binary task takes one of {self.losses}")
            raise ConfigError(f"loss {loss!r} is binary; with num_classes > 1 use one of {self.losses}")
        raise ConfigError(f"unknown loss {loss!r}; choose from {', '.join(BINARY_LOSSES + MULTICLASS_LOSSES)}")

    def uses_class_weights(self, loss: str) -> bool:
        return not self.binary and loss in WEIGHTED_LOSSES

    def metrics(self, threshold: float = 0.5) -> list:
        """The Keras metrics ``buildings fit`` reports (contest Dice & co., or mIoU & per-class IoU)."""
        from buildings.metrics import binary_metrics, multiclass_metrics

        return binary_metrics(threshold) if self.binary else multiclass_metrics(self.num_classes, self.class_names)

    @property
    def monitor(self) -> str:
        """The validation metric that picks the best checkpoint (higher is better)."""
        return "val_contest_dice" if self.binary else "val_miou"

    # -- prediction ----------------------------------------------------------------------------
    def probabilities(self, logits, xp=np):
        """float32 probabilities from (..., C) logits: sigmoid for one logit, softmax for N.

        The one activation of the package: ``xp`` is NumPy (default) or ``keras.ops`` (on the
        device). The sigmoid is written with tanh, which overflows for no logit."""
        logits = np.asarray(logits, np.float32) if xp is np else xp.cast(logits, "float32")
        if self.binary:
            return 0.5 + 0.5 * xp.tanh(0.5 * logits)
        shifted = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
        return shifted / xp.sum(shifted, axis=-1, keepdims=True)

    @property
    def default_output_format(self) -> str:
        """``rle`` (the Tianchi name<TAB>rle file) or ``png-zip`` (a result.zip of label PNGs)."""
        return "rle" if self.binary else "png-zip"

    def check_output_format(self, output_format: str) -> str:
        """The format to write for ``output_format`` (``auto`` → the default); refuses RLE for N classes."""
        if output_format == "auto":
            return self.default_output_format
        if output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"output format must be auto or one of {OUTPUT_FORMATS}, got {output_format!r}")
        if output_format == "rle" and not self.binary:
            raise ConfigError(f"an RLE submission needs a one-logit (binary) model; this one has "
                              f"{self.num_classes} classes: write a result.zip (png-zip) instead")
        return output_format

    def mask_png(self, mask: np.ndarray) -> np.ndarray:
        """A mask as a viewable single-channel PNG: buildings white (0/255), or class indices."""
        return mask * np.uint8(255) if self.binary else mask

    def overlay(self, image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``image_rgb`` with ``mask`` drawn on it: buildings tinted and outlined, or class colours."""
        from buildings.visualize import overlay_labels, overlay_mask

        return overlay_mask(image_rgb, mask) if self.binary else overlay_labels(image_rgb, mask)
