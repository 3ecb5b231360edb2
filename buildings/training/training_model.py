"""The model ``model.fit`` trains: the segmentation model plus what happens to a batch on the device.

Batches arrive as uint8 (``buildings.data.pipeline``): ``{"image": uint8 (B, H, W, 3)}`` and, when
augmentation runs on the device, ``"augment"``: one row of parameters per sample drawn by the CPU
workers (``buildings.data.augment``). :class:`TrainingModel` then, inside the training step:

1. scales the image to [0, 1], applies the augmentation (training only), normalises it with the
   ImageNet mean / std (``buildings.preprocessing``), and runs the segmentation model;
2. applies the same geometry and CutMix to the mask before the loss and the metrics see it
   (``compute_loss`` / ``compute_metrics``, which every backend's train step calls).

The segmentation model itself stays the plain functional model that checkpoints hold (the run
directory saves ``TrainingModel.model``); the wrapper only lives during training. Validation batches
carry no parameters, so they are only normalised.
"""

from __future__ import annotations

import keras
from keras import ops

from buildings.data.augment import augment_images, augment_masks
from buildings.preprocessing import standardise, to_unit

__all__ = ["TrainingModel"]


class TrainingModel(keras.Model):
    """``model`` (ImageNet-normalised float input, logits out) fed uint8 batches, augmented on the
    device when the batch carries augmentation parameters."""

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(name=f"{model.name}_training", **kwargs)
        self.model = model
        self.built = True  # every variable is the inner model's, already built

    @staticmethod
    def _unpack(inputs):
        if isinstance(inputs, dict):
            return inputs["image"], inputs.get("augment")
        return inputs, None

    def call(self, inputs, training=False):
        image, params = self._unpack(inputs)
        x = to_unit(image, ops)
        if training and params is not None:
            x = augment_images(x, params)
        x = standardise(x, ops)
        return self.model(x, training=training)

    def _targets(self, x, y):
        _, params = self._unpack(x)
        if params is None or y is None:
            return y
        return augment_masks(y, params)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x=x, y=self._targets(x, y), y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, self._targets(x, y), y_pred, sample_weight=sample_weight)
