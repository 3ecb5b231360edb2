"""What a model's input is: RGB scaled to [0, 1] then normalised with the ImageNet mean / std.

:func:`normalise` is the one place this is written. It takes NumPy arrays (the ONNX path, tests) or
Keras tensors (``xp=keras.ops``: the training step and the inference model on the device, which
receive uint8 batches). The encoders' input adapter undoes it (``buildings.models.encoders``) to
give each pretrained family the input it was trained on. Kept here, NumPy-only, so that models and
data share it without importing each other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalise", "standardise", "to_unit"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def to_unit(images, xp=np):
    """uint8 RGB → float32 in [0, 1] (training augments there, before :func:`standardise`)."""
    x = np.asarray(images).astype(np.float32) if xp is np else xp.cast(images, "float32")
    return x / 255.0


def standardise(x, xp=np):
    """[0, 1] RGB → ImageNet mean/std normalised."""
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def normalise(images, xp=np):
    """uint8 RGB (..., 3) → float32, ImageNet mean/std normalised (what the models expect):
    :func:`standardise` of :func:`to_unit`.

    ``xp``: the array namespace, NumPy (default) or ``keras.ops`` for tensors on the device."""
    return standardise(to_unit(images, xp), xp)
