"""The device half of prediction for Keras models: :class:`ProbabilityModel` takes uint8 windows
and returns probabilities, with normalisation, test-time augmentation, sigmoid / softmax and the
TTA mean computed on the device in keras.ops (every backend runs it)."""

from __future__ import annotations

import keras
from keras import ops

from buildings.inference.predictor import tta_transforms
from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ProbabilityModel"]


def _d4_pairs(mode: str) -> list[tuple[int, bool]]:
    """(quarter turns, then a flip of the width axis) per TTA transform, as in :func:`tta_transforms`."""
    tta_transforms(mode)  # validates the mode
    return {"none": [(0, False)], "flip": [(0, False), (0, True), (2, True)],
            "d4": [(k, f) for k in range(4) for f in (False, True)]}[mode]


def _rot90(x, turns: int):
    """``np.rot90(x, turns, axes=(1, 2))`` in keras.ops for (B, H, W, C) tensors. Written with
    transpose and flips: ``keras.ops.rot90`` on the tensorflow backend (Keras 3.15.1) returns a wrong
    result for two turns on 4-D tensors (tests/test_probability_model.py catches it)."""
    turns %= 4
    if turns == 0:
        return x
    if turns == 2:
        return ops.flip(ops.flip(x, axis=1), axis=2)
    if turns == 1:
        return ops.transpose(ops.flip(x, axis=2), (0, 2, 1, 3))
    return ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=2)


class ProbabilityModel(keras.Model):
    """``model`` wrapped for inference on the device: uint8 RGB windows (B, H, W, 3) in, float32
    probabilities (B, H, W, C) out, averaged over the TTA transforms after undoing each.

    The vertical flip of ``flip`` TTA is the half turn followed by a horizontal flip: the same
    permutation of pixels, so the three transforms are exactly those of :func:`tta_transforms`."""

    def __init__(self, model: keras.Model, tta: str = "none", **kwargs):
        super().__init__(name=f"{model.name}_probabilities", **kwargs)
        self.model = model
        self.transforms = _d4_pairs(tta)
        self.binary = model.output_shape[-1] == 1
        self.built = True  # every variable is the inner model's

    def call(self, images):
        x = ops.cast(images, "float32") / 255.0
        x = (x - ops.convert_to_tensor(IMAGENET_MEAN)) / ops.convert_to_tensor(IMAGENET_STD)
        total = None
        for turns, flip in self.transforms:
            view = _rot90(x, turns)
            view = ops.flip(view, axis=2) if flip else view
            logits = ops.cast(self.model(view, training=False), "float32")
            probs = ops.sigmoid(logits) if self.binary else ops.softmax(logits, axis=-1)
            probs = ops.flip(probs, axis=2) if flip else probs
            probs = _rot90(probs, -turns)
            total = probs if total is None else total + probs
        return total / len(self.transforms)
