"""Probabilities of one or several models for images of any size: batched, with test-time
augmentation, ensembles and seamless tiling.

Models output logits; the :class:`~buildings.task.Task` of their output turns them into
probabilities (sigmoid for one logit, softmax for N) and masks. For a Keras model a window batch
goes to the device as uint8; normalisation, the TTA transforms, the sigmoid / softmax and the TTA
average run there, in one ``predict_on_batch`` of a ``device_model.ProbabilityModel`` (keras.ops,
so every backend runs it), and only the probabilities come back. An exported ONNX model
(``onnx_model.OnnxModel``) does the same through onnxruntime, and this module imports no Keras.
Ensembling, votes and tile blending happen in NumPy.

* TTA: ``none``, ``flip`` (identity + horizontal + vertical flips), ``d4`` (the 8 rotations and
  reflections of the square); probabilities are averaged after undoing each transform.
* Ensembles: mean of probabilities (optional weights), or a per-pixel majority vote.
* Any size: images are cut into overlapping ``tile``-sized windows (reflect-padded to a multiple
  of 32 when smaller), and window probabilities are blended with a raised-cosine weight, so window
  borders leave no seams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from buildings.errors import ConfigError
from buildings.task import Task

__all__ = ["TTA_MODES", "Predictor", "tta_transforms"]

TTA_MODES = ("none", "flip", "d4")


def _d4(k: int, flip: bool):
    def forward(x):  # x: (B, H, W, C)
        x = np.rot90(x, k, axes=(1, 2))
        return x[:, :, ::-1] if flip else x

    def inverse(y):
        y = y[:, :, ::-1] if flip else y
        return np.rot90(y, -k, axes=(1, 2))

    return forward, inverse


def tta_transforms(mode: str):
    if mode == "none":
        return [_d4(0, False)]
    if mode == "flip":
        identity = _d4(0, False)
        hflip = (lambda x: x[:, :, ::-1], lambda y: y[:, :, ::-1])
        vflip = (lambda x: x[:, ::-1], lambda y: y[:, ::-1])
        return [identity, hflip, vflip]
    if mode == "d4":
        return [_d4(k, flip) for k in range(4) for flip in (False, True)]
    raise ConfigError(f"tta must be one of {TTA_MODES}, got {mode!r}")


def _window(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights: raised-cosine ramps over ``overlap`` pixels at each end, never 0."""
    weights = np.ones(size, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        weights[:overlap] = ramp
        weights[-overlap:] = ramp[::-1]
    return weights


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


@dataclass
class Predictor:
    """Probabilities of one or several models for RGB uint8 images of any size.

    Args:
        models: Keras models (logits out), e.g. from :func:`load_checkpoints`.
        tta: ``none``, ``flip`` or ``d4``.
        weights: ensemble weights (default equal).
        vote: per-pixel majority vote of thresholded masks instead of mean probabilities.
        threshold: probability threshold for binary masks (and for each model's ballot in a vote).
        tile: window side for images larger than it (a multiple of 32).
        overlap: pixels shared by neighbouring windows.
        batch_size: windows per ``predict_on_batch`` call, or ``auto``: as many ``tile``-sized
            windows as fit the device's memory budget (``runtime.device.batch_size_for``).
    """

    models: list
    tta: str = "none"
    weights: Sequence[float] | None = None
    vote: bool = False
    threshold: float = 0.5
    tile: int = 512
    overlap: int = 128
    batch_size: int | str = "auto"

    def __post_init__(self):
        tta_transforms(self.tta)
        if not self.models:
            raise ConfigError("a Predictor needs at least one model")
        if self.tile % 32:
            raise ConfigError(f"tile must be a multiple of 32, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ConfigError(f"overlap must be in [0, tile), got {self.overlap}")
        if self.weights is not None and (len(self.weights) != len(self.models) or min(self.weights) < 0
                                         or sum(self.weights) <= 0):
            raise ConfigError(f"ensemble weights {list(self.weights)}: need {len(self.models)} non-negative "
                              "numbers with a positive sum, one per model")
        self.task = Task(self.models[0].output_shape[-1])
        if self.batch_size == "auto":
            from buildings.runtime.device import batch_size_for

            self.batch_size = batch_size_for(self.models, self.tile, self.tile)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive number or auto, got {self.batch_size!r}")

    @classmethod
    def from_checkpoints(cls, paths, **options) -> Predictor:
        """A predictor over the ``.keras`` (or exported ``.onnx``) checkpoints ``paths`` (see :func:`load_checkpoints`)."""
        from buildings.inference.checkpoints import load_checkpoints

        return cls(load_checkpoints(paths), **options)

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    # -- windows -------------------------------------------------------------------------------
    def _model_probs(self, model, windows: np.ndarray) -> np.ndarray:
        """Probabilities (B, H, W, C) of one model with TTA, for uint8 RGB windows, computed on the device."""
        if hasattr(model, "probabilities"):  # an exported model (onnx_model.OnnxModel)
            return model.probabilities(np.ascontiguousarray(windows), self.tta)
        cache = self.__dict__.setdefault("_device_models", {})
        if id(model) not in cache:
            from buildings.inference.device_model import ProbabilityModel

            cache[id(model)] = ProbabilityModel(model, self.tta)
        return np.asarray(cache[id(model)].predict_on_batch(np.ascontiguousarray(windows)), np.float32)

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        """Ensemble probabilities (B, h, w, C) of RGB uint8 windows."""
        weights = np.ones(len(self.models)) if self.weights is None else np.asarray(self.weights, float)
        weights = weights / weights.sum()
        total = 0.0
        for weight, model in zip(weights, self.models, strict=True):
            probs = self._model_probs(model, windows)
            if self.vote:
                probs = self.task.votes(probs, self.threshold)
            total = total + weight * probs
        return np.asarray(total, np.float32)

    # -- whole images --------------------------------------------------------------------------
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 probabilities for one RGB uint8 image of any size."""
        height, width = image.shape[:2]
        tile_h = min(self.tile, -(-height // 32) * 32)
        tile_w = min(self.tile, -(-width // 32) * 32)
        pad_h, pad_w = max(tile_h - height, 0), max(tile_w - width, 0)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        full_h, full_w = image.shape[:2]
        overlap_h = min(self.overlap, tile_h // 2) if full_h > tile_h else 0
        overlap_w = min(self.overlap, tile_w // 2) if full_w > tile_w else 0
        ys = _starts(full_h, tile_h, tile_h - overlap_h)
        xs = _starts(full_w, tile_w, tile_w - overlap_w)
        if len(ys) * len(xs) == 1:
            probs = self._window_probs(image[None])[0]
            return probs[:height, :width]
        weight = np.outer(_window(tile_h, overlap_h), _window(tile_w, overlap_w))[..., None]
        accumulated = np.zeros((full_h, full_w, self.num_classes), np.float32)
        norm = np.zeros((full_h, full_w, 1), np.float32)
        boxes = [(y, x) for y in ys for x in xs]
        for i in range(0, len(boxes), self.batch_size):
            chunk = boxes[i:i + self.batch_size]
            windows = np.stack([image[y:y + tile_h, x:x + tile_w] for y, x in chunk])
            for (y, x), probs in zip(chunk, self._window_probs(windows), strict=True):
                accumulated[y:y + tile_h, x:x + tile_w] += probs * weight
                norm[y:y + tile_h, x:x + tile_w] += weight
        return (accumulated / norm)[:height, :width]

    def batch_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probabilities for several images; same-size images up to ``tile`` go in one batch."""
        out = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):
            h, w = image.shape[:2]
            if h <= self.tile and w <= self.tile and h % 32 == 0 and w % 32 == 0:
                groups.setdefault((h, w), []).append(index)
            else:
                out[index] = self.probabilities(image)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                probs = self._window_probs(np.stack([images[i] for i in chunk]))
                for i, p in zip(chunk, probs, strict=True):
                    out[i] = p
        return out

    def mask(self, probs: np.ndarray) -> np.ndarray:
        """uint8 mask: {0, 1} for binary (threshold; a majority for a vote), class indices for N
        classes (argmax)."""
        return self.task.to_mask(probs, 0.5 if self.vote else self.threshold)
