"""An exported model (``buildings export --format onnx``) run by onnxruntime, without Keras.

:class:`OnnxModel` stands where a Keras model stands in :class:`~buildings.inference.Predictor`:
it has an ``output_shape`` (the class count comes from the file's metadata) and computes
probabilities for uint8 windows itself: the ImageNet normalisation, the TTA transforms
(``predictor.tta_transforms``, the same ones the Keras path applies on the device), the sigmoid /
softmax and the TTA mean, in NumPy around ``InferenceSession.run``. So tiling, ensembles,
post-processing and every writer work unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from buildings.errors import CheckpointError

__all__ = ["OnnxModel"]

PREFIX = "buildings."


class OnnxModel:
    """An ONNX file written by ``buildings export``: float32 NHWC normalised images in, logits out."""

    def __init__(self, path):
        try:
            import onnxruntime
        except ImportError:
            raise CheckpointError(f"{path}: running an ONNX model needs onnxruntime "
                                  "(pip install -e \".[deploy]\")") from None
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        try:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in onnxruntime.get_available_providers()]
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as err:  # onnxruntime raises its own types for a file that is not a model
            raise CheckpointError(f"{path}: not a loadable ONNX model ({type(err).__name__}: {err})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.num_classes = int(meta[PREFIX + "num_classes"])
            self.mean = np.asarray(json.loads(meta[PREFIX + "mean"]), np.float32)
            self.std = np.asarray(json.loads(meta[PREFIX + "std"]), np.float32)
            self._peak = float(meta[PREFIX + "peak_bytes_per_pixel"])
            self._largest = float(meta[PREFIX + "largest_per_pixel"])
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: an ONNX model without the metadata `buildings export` writes "
                                  f"({type(err).__name__}: {err}); export it with `buildings export`") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
            raise CheckpointError(f"{path}: not a segmentation model (inputs {[i.shape for i in inputs]})")
        self.input_name = inputs[0].name
        self.name = meta.get(PREFIX + "model", path.stem)
        self.path = path

    @property
    def output_shape(self) -> tuple:
        return (None, None, None, self.num_classes)

    @property
    def input_shape(self) -> tuple:
        return (None, None, None, 3)

    def activation_profile(self, height: int, width: int) -> tuple[int, int]:
        """(peak live bytes, largest tensor's elements) of one image, measured on the Keras model at export."""
        return int(self._peak * height * width), int(self._largest * height * width)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (B, H, W, C) of float32 normalised images."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, np.float32)})[0]

    def probabilities(self, windows: np.ndarray, tta: str = "none") -> np.ndarray:
        """Probabilities (B, H, W, C) of uint8 RGB windows, averaged over the TTA transforms."""
        from buildings.inference.predictor import tta_transforms

        x = (windows.astype(np.float32) / 255.0 - self.mean) / self.std
        total = None
        transforms = tta_transforms(tta)
        for forward, inverse in transforms:
            logits = self.logits(forward(x)).astype(np.float32)
            if self.num_classes == 1:
                probs = 1.0 / (1.0 + np.exp(-logits))
            else:
                e = np.exp(logits - logits.max(axis=-1, keepdims=True))
                probs = e / e.sum(axis=-1, keepdims=True)
            probs = inverse(probs)
            total = probs if total is None else total + probs
        return np.asarray(total / len(transforms), np.float32)
