"""The device half of prediction for Keras models: :class:`ProbabilityModel` takes uint8 windows
and returns probabilities, with the normalisation (``preprocessing.normalise``), the TTA views
(``tta``), the activation (``Task.probabilities``) and the TTA mean computed on the device in
keras.ops (every backend runs it): the same functions the ONNX backend applies in NumPy."""

from __future__ import annotations

import keras
from keras import ops

from buildings import tta
from buildings.preprocessing import normalise
from buildings.task import Task

__all__ = ["ProbabilityModel"]


class ProbabilityModel(keras.Model):
    """``model`` wrapped for inference on the device: uint8 RGB windows (B, H, W, 3) in, float32
    probabilities (B, H, W, C) out, averaged over the TTA views after undoing each."""

    def __init__(self, model: keras.Model, tta_mode: str = "none", **kwargs):
        super().__init__(name=f"{model.name}_probabilities", **kwargs)
        self.model = model
        self.views = tta.views(tta_mode)
        self.task = Task(model.output_shape[-1])
        self.built = True  # every variable is the inner model's

    def call(self, images):
        x = normalise(images, ops)
        total = None
        for view in self.views:
            logits = self.model(tta.apply(x, view, ops), training=False)
            probs = tta.undo(self.task.probabilities(logits, ops), view, ops)
            total = probs if total is None else total + probs
        return total / len(self.views)
