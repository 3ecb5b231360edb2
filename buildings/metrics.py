"""Streaming segmentation metrics from logits, cheap on every backend.

``keras.metrics.BinaryIoU`` builds a confusion matrix through a generic path that costs ~5 s a
step on torch; these keep a handful of float32 counters updated with a few reductions.

Binary (one logit channel; a building where logit >= logit(threshold), which is the prediction rule's
threshold comparison, ``inference.prediction.above``, on logits instead of probabilities):
``ContestDice`` (mean per-image Dice, 1 when truth and prediction are both empty — the Tianchi
score), ``GlobalDice`` (pixels pooled over all images), ``IoU``, ``Precision``, ``Recall``.
Multi-class: ``MeanIoU`` over N classes and ``ClassIoU`` of one class, label 255 ignored.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from buildings.errors import ConfigError
from buildings.inference.prediction import above
from buildings.task import IGNORE_INDEX

__all__ = ["ClassIoU", "ContestDice", "GlobalDice", "IoU", "MeanIoU", "Precision", "Recall", "binary_metrics",
           "multiclass_metrics"]

def _logit(threshold: float) -> float:
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
    return math.log(threshold / (1.0 - threshold))


def _per_image_counts(y_true, logits, threshold: float):
    """(intersection, predicted, true) pixel counts per image, float32, shape (B,)."""
    logits = ops.cast(logits, "float32")
    batch = ops.shape(logits)[0]
    pred = ops.cast(above(ops.reshape(logits, (batch, -1)), _logit(threshold)), "float32")
    true = ops.cast(ops.reshape(ops.cast(y_true, "float32"), (batch, -1)) > 0.5, "float32")
    return ops.sum(pred * true, axis=-1), ops.sum(pred, axis=-1), ops.sum(true, axis=-1)


class _BinaryCounts(keras.metrics.Metric):
    """Counters shared by the binary metrics: tp, fp, fn pooled over pixels."""

    def __init__(self, threshold: float = 0.5, name=None, dtype="float32"):
        super().__init__(name=name or self.default_name, dtype=dtype)
        self.threshold = threshold
        _logit(threshold)
        self.tp = self.add_variable((), initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable((), initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable((), initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        inter, pred, true = _per_image_counts(y_true, y_pred, self.threshold)
        self.tp.assign_add(ops.sum(inter))
        self.fp.assign_add(ops.sum(pred - inter))
        self.fn.assign_add(ops.sum(true - inter))

    def reset_state(self):
        for variable in self.variables:  # ops.zeros_like(variable) fails on jax
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def _ratio(numerator, denominator, empty=1.0):
    return ops.where(denominator > 0, numerator / ops.maximum(denominator, 1e-12), empty)


@keras.saving.register_keras_serializable(package="buildings")
class GlobalDice(_BinaryCounts):
    default_name = "global_dice"

    def result(self):
        return _ratio(2.0 * self.tp, 2.0 * self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="buildings")
class IoU(_BinaryCounts):
    default_name = "iou"

    def result(self):
        return _ratio(self.tp, self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="buildings")
class Precision(_BinaryCounts):
    default_name = "precision"

    def result(self):
        return _ratio(self.tp, self.tp + self.fp)


@keras.saving.register_keras_serializable(package="buildings")
class Recall(_BinaryCounts):
    default_name = "recall"

    def result(self):
        return _ratio(self.tp, self.tp + self.fn)


@keras.saving.register_keras_serializable(package="buildings")
class ContestDice(keras.metrics.Metric):
    """The contest score: mean over images of per-image Dice, 1 when both masks are empty."""

    def __init__(self, threshold: float = 0.5, name="contest_dice", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.threshold = threshold
        _logit(threshold)
        self.total = self.add_variable((), initializer="zeros", name="total", dtype="float32")
        self.count = self.add_variable((), initializer="zeros", name="count", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        inter, pred, true = _per_image_counts(y_true, y_pred, self.threshold)
        dice = _ratio(2.0 * inter, pred + true)
        self.total.assign_add(ops.sum(dice))
        self.count.assign_add(ops.cast(ops.shape(dice)[0], "float32"))

    def result(self):
        return _ratio(self.total, self.count, empty=0.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="buildings")
class MeanIoU(keras.metrics.Metric):
    """Mean IoU over ``num_classes`` from N-channel logits (argmax); label 255 is ignored.
    Classes absent from both truth and prediction are left out of the mean."""

    def __init__(self, num_classes: int, name="miou", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes
        self.confusion = self.add_variable((num_classes, num_classes), initializer="zeros",
                                           name="confusion", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        n = self.num_classes
        pred = ops.reshape(ops.argmax(y_pred, axis=-1), (-1,))
        true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        valid = ops.not_equal(true, IGNORE_INDEX)
        index = ops.where(valid, true * n + ops.cast(pred, "int32"), 0)
        counts = ops.bincount(index, weights=ops.cast(valid, "float32"), minlength=n * n)
        self.confusion.assign_add(ops.reshape(ops.cast(counts[: n * n], "float32"), (n, n)))

    def _intersection_union(self):
        diagonal = ops.diagonal(self.confusion)
        return diagonal, ops.sum(self.confusion, axis=0) + ops.sum(self.confusion, axis=1) - diagonal

    def result(self):
        diagonal, union = self._intersection_union()
        present = ops.cast(union > 0, "float32")
        iou = diagonal / ops.maximum(union, 1e-12)
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.confusion.assign(ops.zeros(self.confusion.shape, "float32"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="buildings")
class ClassIoU(MeanIoU):
    """IoU of one class of ``num_classes`` (argmax of N logits; label 255 ignored); NaN-free: 0 when
    the class is absent from both truth and prediction so far."""

    def __init__(self, num_classes: int, class_id: int, name=None, dtype="float32"):
        if not 0 <= class_id < num_classes:
            raise ConfigError(f"class_id must be in 0..{num_classes - 1}, got {class_id}")
        super().__init__(num_classes, name=name or f"iou_class{class_id}", dtype=dtype)
        self.class_id = class_id

    def result(self):
        diagonal, union = self._intersection_union()
        return _ratio(diagonal[self.class_id], union[self.class_id], empty=0.0)

    def get_config(self):
        return {**super().get_config(), "class_id": self.class_id}


def multiclass_metrics(num_classes: int, class_names=()) -> list[keras.metrics.Metric]:
    """The metrics ``buildings fit`` reports for N-logit models: ``miou`` and ``iou_<class>``."""
    names = list(class_names) if len(class_names) == num_classes else [f"class{i}" for i in range(num_classes)]
    return [MeanIoU(num_classes)] + [ClassIoU(num_classes, i, name=f"iou_{names[i]}") for i in range(num_classes)]


def binary_metrics(threshold: float = 0.5) -> list[keras.metrics.Metric]:
    """The metrics ``buildings fit`` reports for one-logit models."""
    return [ContestDice(threshold), GlobalDice(threshold), IoU(threshold), Precision(threshold),
            Recall(threshold)]
