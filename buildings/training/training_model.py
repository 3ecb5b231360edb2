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

With torch.distributed (``buildings.training.distributed``), :meth:`TrainingModel.replicate` gives
it the ``DistributedDataParallel`` wrapper of the model, which the training forward pass goes
through (its backward pass averages the gradients over ranks), and the function that sums the
metric states over ranks before a training step's logs are read.
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
        self.replicate(None)

    def replicate(self, replicated, *, reduce_metrics=None) -> None:
        """Train through ``replicated`` (a DDP wrapper of ``self.model``; None: the model itself),
        with the training metrics' states reduced by ``reduce_metrics`` (variables -> values)."""
        # object.__setattr__: neither Keras nor torch may track the wrapper (it holds this model's weights)
        object.__setattr__(self, "_replicated", replicated)
        object.__setattr__(self, "_reduce_metrics", reduce_metrics)
        object.__setattr__(self, "_in_train_step", False)

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
        model = self._replicated if training and self._replicated is not None else self.model
        return model(x, training=training)

    def train_step(self, *args, **kwargs):
        if self._reduce_metrics is None:
            return super().train_step(*args, **kwargs)
        object.__setattr__(self, "_in_train_step", True)
        try:
            return super().train_step(*args, **kwargs)
        finally:
            object.__setattr__(self, "_in_train_step", False)

    def get_metrics_result(self):
        """Keras's, except inside a distributed torch training step: the metric states summed over
        ranks first (validation runs on rank 0 alone and reads its own)."""
        if self._reduce_metrics is None or not self._in_train_step:
            return super().get_metrics_result()
        variables = self.metrics_variables
        with keras.StatelessScope(state_mapping=list(zip(variables, self._reduce_metrics(variables)))):
            return super().get_metrics_result()

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
