"""Segmentation losses in keras.ops, from logits, reduced in float32 (even under mixed precision:
an fp16 sum over 512x512 pixels overflows).

Binary (one logit channel; ``y_true`` in {0, 1}): ``bce``, ``dice``, ``bce_dice`` (0.8 / 0.2 by
default, the course recipe), ``lovasz_hinge``, ``focal``. Multi-class (N logit channels; ``y_true``
class indices, 255 = ignored): ``ce`` (optional class weights), ``lovasz_softmax``,
``multiclass_dice``, ``ce_lovasz`` (0.7 / 0.3). Each is a ``keras.losses.Loss`` registered for
serialisation, and ``get_loss(name, **options)`` builds one by name.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from buildings.errors import ConfigError
from buildings.task import IGNORE_INDEX

__all__ = [
    "LOSSES",
    "BCEDiceLoss",
    "BinaryCrossEntropyLoss",
    "CrossEntropyLoss",
    "CrossEntropyLovaszLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "MultiClassDiceLoss",
    "class_weights_from_counts",
    "get_loss",
]


def _binary_inputs(y_true, y_pred):
    """Flatten per image: (B, N) float32 targets and logits."""
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    batch = ops.shape(y_pred)[0]
    return ops.reshape(y_true, (batch, -1)), ops.reshape(y_pred, (batch, -1))


def binary_cross_entropy(y_true, logits):
    """Per-image mean BCE from logits (numerically stable form)."""
    t, z = _binary_inputs(y_true, logits)
    loss = ops.maximum(z, 0.0) - z * t + ops.log1p(ops.exp(-ops.abs(z)))
    return ops.mean(loss, axis=-1)


def soft_dice_loss(y_true, logits, smooth: float = 1.0):
    """Per-image 1 - soft Dice of sigmoid probabilities."""
    t, z = _binary_inputs(y_true, logits)
    p = ops.sigmoid(z)
    intersection = ops.sum(p * t, axis=-1)
    total = ops.sum(p, axis=-1) + ops.sum(t, axis=-1)
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def focal_loss(y_true, logits, alpha: float = 0.25, gamma: float = 2.0):
    """Per-image mean binary focal loss (Lin et al.) from logits."""
    t, z = _binary_inputs(y_true, logits)
    bce = ops.maximum(z, 0.0) - z * t + ops.log1p(ops.exp(-ops.abs(z)))
    p = ops.sigmoid(z)
    p_t = p * t + (1.0 - p) * (1.0 - t)
    alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t)
    return ops.mean(alpha_t * ops.power(1.0 - p_t, gamma) * bce, axis=-1)


def _lovasz_grad(sorted_fg):
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors; rows are images."""
    gts = ops.sum(sorted_fg, axis=-1, keepdims=True)
    intersection = gts - ops.cumsum(sorted_fg, axis=-1)
    union = gts + ops.cumsum(1.0 - sorted_fg, axis=-1)
    jaccard = 1.0 - intersection / ops.maximum(union, 1e-12)
    return ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)


def lovasz_hinge(y_true, logits):
    """Per-image Lovasz hinge (Berman et al. 2018) from logits."""
    t, z = _binary_inputs(y_true, logits)
    signs = 2.0 * t - 1.0
    errors = 1.0 - z * signs
    order = ops.argsort(-errors, axis=-1)
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    fg_sorted = ops.take_along_axis(t, order, axis=-1)
    grad = ops.stop_gradient(_lovasz_grad(fg_sorted))
    return ops.sum(ops.relu(errors_sorted) * grad, axis=-1)


def _multiclass_inputs(y_true, logits):
    """(B*N, C) float32 logits, (B*N,) int labels with ignored set to 0, (B*N,) float valid mask."""
    logits = ops.cast(logits, "float32")
    classes = logits.shape[-1]
    logits = ops.reshape(logits, (-1, classes))
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    valid = ops.cast(ops.not_equal(labels, IGNORE_INDEX), "float32")
    labels = ops.where(ops.equal(labels, IGNORE_INDEX), 0, labels)
    return logits, labels, valid, classes


def cross_entropy(y_true, logits, class_weights=None):
    """Weighted mean cross-entropy over non-ignored pixels (a scalar for the batch)."""
    logits, labels, valid, classes = _multiclass_inputs(y_true, logits)
    log_p = ops.log_softmax(logits, axis=-1)
    onehot = ops.one_hot(labels, classes)
    nll = -ops.sum(onehot * log_p, axis=-1)
    weights = valid
    if class_weights is not None:
        weights = weights * ops.take(ops.convert_to_tensor(class_weights, "float32"), labels)
    return ops.sum(nll * weights) / ops.maximum(ops.sum(weights), 1e-12)


def lovasz_softmax(y_true, logits):
    """Lovasz-softmax over the batch, mean over classes present in the truth; ignores 255."""
    logits, labels, valid, classes = _multiclass_inputs(y_true, logits)
    probs = ops.softmax(logits, axis=-1) * valid[:, None]
    fg = ops.one_hot(labels, classes) * valid[:, None]  # (P, C)
    errors = ops.transpose(ops.abs(fg - probs))  # (C, P): ignored pixels have error 0
    fg = ops.transpose(fg)
    order = ops.argsort(-errors, axis=-1)
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    fg_sorted = ops.take_along_axis(fg, order, axis=-1)
    per_class = ops.sum(errors_sorted * ops.stop_gradient(_lovasz_grad(fg_sorted)), axis=-1)
    present = ops.cast(ops.sum(fg, axis=-1) > 0, "float32")
    return ops.sum(per_class * present) / ops.maximum(ops.sum(present), 1.0)


def multiclass_dice_loss(y_true, logits, smooth: float = 1.0):
    """1 - mean over classes of soft Dice over the batch's non-ignored pixels."""
    logits, labels, valid, classes = _multiclass_inputs(y_true, logits)
    probs = ops.softmax(logits, axis=-1) * valid[:, None]
    fg = ops.one_hot(labels, classes) * valid[:, None]
    intersection = ops.sum(probs * fg, axis=0)
    total = ops.sum(probs, axis=0) + ops.sum(fg, axis=0)
    return 1.0 - ops.mean((2.0 * intersection + smooth) / (total + smooth))


class _Loss(keras.losses.Loss):
    """Base: per-call options stored for get_config."""

    options: tuple[str, ...] = ()

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype="float32", **options):
        super().__init__(name=name or self.default_name, reduction=reduction, dtype=dtype)
        for key in self.options:
            setattr(self, key, options.pop(key, getattr(type(self), key)))
        if options:
            raise TypeError(f"{type(self).__name__} does not take {sorted(options)}")

    def get_config(self):
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self.options})
        return config


def _register(cls):
    return keras.saving.register_keras_serializable(package="buildings")(cls)


@_register
class BinaryCrossEntropyLoss(_Loss):
    default_name = "bce"

    def call(self, y_true, y_pred):
        return binary_cross_entropy(y_true, y_pred)


@_register
class DiceLoss(_Loss):
    default_name = "dice"
    options = ("smooth",)
    smooth = 1.0

    def call(self, y_true, y_pred):
        return soft_dice_loss(y_true, y_pred, self.smooth)


@_register
class BCEDiceLoss(_Loss):
    """``bce_weight * BCE + dice_weight * Dice``: 0.8 / 0.2 by default (the course baseline)."""

    default_name = "bce_dice"
    options = ("bce_weight", "dice_weight", "smooth")
    bce_weight = 0.8
    dice_weight = 0.2
    smooth = 1.0

    def call(self, y_true, y_pred):
        return (self.bce_weight * binary_cross_entropy(y_true, y_pred)
                + self.dice_weight * soft_dice_loss(y_true, y_pred, self.smooth))


@_register
class LovaszHingeLoss(_Loss):
    default_name = "lovasz_hinge"

    def call(self, y_true, y_pred):
        return lovasz_hinge(y_true, y_pred)


@_register
class FocalLoss(_Loss):
    default_name = "focal"
    options = ("alpha", "gamma")
    alpha = 0.25
    gamma = 2.0

    def call(self, y_true, y_pred):
        return focal_loss(y_true, y_pred, self.alpha, self.gamma)


@_register
class CrossEntropyLoss(_Loss):
    """Cross-entropy over N class logits; label 255 ignored; optional per-class weights."""

    default_name = "ce"
    options = ("class_weights",)
    class_weights = None

    def call(self, y_true, y_pred):
        return cross_entropy(y_true, y_pred, self.class_weights)


@_register
class LovaszSoftmaxLoss(_Loss):
    default_name = "lovasz_softmax"

    def call(self, y_true, y_pred):
        return lovasz_softmax(y_true, y_pred)


@_register
class MultiClassDiceLoss(_Loss):
    default_name = "multiclass_dice"
    options = ("smooth",)
    smooth = 1.0

    def call(self, y_true, y_pred):
        return multiclass_dice_loss(y_true, y_pred, self.smooth)


@_register
class CrossEntropyLovaszLoss(_Loss):
    """``ce_weight * CE + lovasz_weight * Lovasz-softmax`` (0.7 / 0.3, a strong BDCI recipe)."""

    default_name = "ce_lovasz"
    options = ("ce_weight", "lovasz_weight", "class_weights")
    ce_weight = 0.7
    lovasz_weight = 0.3
    class_weights = None

    def call(self, y_true, y_pred):
        return (self.ce_weight * cross_entropy(y_true, y_pred, self.class_weights)
                + self.lovasz_weight * lovasz_softmax(y_true, y_pred))


LOSSES = {cls.default_name: cls for cls in (
    BinaryCrossEntropyLoss, DiceLoss, BCEDiceLoss, LovaszHingeLoss, FocalLoss,
    CrossEntropyLoss, LovaszSoftmaxLoss, MultiClassDiceLoss, CrossEntropyLovaszLoss)}


def get_loss(name: str, **options) -> keras.losses.Loss:
    """A loss by name (``bce``, ``dice``, ``bce_dice``, ``lovasz_hinge``, ``focal``, ``ce``,
    ``lovasz_softmax``, ``multiclass_dice``, ``ce_lovasz``) with its options."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name](**options)


def class_weights_from_counts(counts) -> list[float]:
    """Cross-entropy class weights ∝ 1/sqrt(pixel frequency), scaled so that the pixel-weighted
    mean weight is 1 (the loss keeps its scale); a class with no training pixel gets the largest
    weight of the others."""
    counts = np.asarray(counts, np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    present = frequency > 0
    weights = np.zeros_like(frequency)
    weights[present] = frequency[present] ** -0.5
    weights /= max(float((frequency * weights).sum()), 1e-12)
    weights[~present] = weights[present].max() if present.any() else 1.0
    return [round(float(w), 4) for w in weights]
