"""What a model's input is: RGB scaled to [0, 1] then normalised with the ImageNet mean / std.

The data pipeline produces it (:func:`normalise`), inference produces it, and the encoders' input
adapter undoes it (``buildings.models.encoders``) to give each pretrained family the input it was
trained on. Kept here, NumPy-only, so that models and data share it without importing each other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalise"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) → float32, ImageNet mean/std normalised (what the models expect)."""
    return (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
