"""Probabilities of one or several models for images of any size: batched, with test-time
augmentation, ensembles and seamless tiling; and the masks of those probabilities, by the
predictor's :class:`~buildings.inference.prediction.MaskRule` (``Predictor.rule``).

Each model is an inference backend (``backends``: a Keras model computing on its device, or an
exported ONNX file run by onnxruntime without Keras): uint8 windows in, probabilities out, with
the normalisation, the TTA views (``tta``), the activation and the TTA mean inside. Ensembling,
votes and tile blending happen here in NumPy.

* TTA: ``none``, ``flip`` (identity + horizontal + vertical flips), ``d4`` (the 8 rotations and
  reflections of the square); probabilities are averaged after undoing each view.
* Ensembles: mean of probabilities (optional weights), or a per-pixel majority vote of each
  model's mask (``vote``; the rule then decides by majority).
* Any size: images are cut into overlapping ``tile``-sized windows (reflect-padded to a multiple
  of the stride when smaller), and window probabilities are blended with a raised-cosine weight,
  so window borders leave no seams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from buildings import tta as tta_views
from buildings.contract import STRIDE, check_stride_multiple, round_up_to_stride
from buildings.errors import ConfigError
from buildings.inference.backends import KerasBackend, as_backend
from buildings.inference.prediction import MaskRule

__all__ = ["Predictor"]


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
        models: inference backends or Keras models (logits out), e.g. from :func:`load_checkpoints`.
        tta: ``none``, ``flip`` or ``d4``.
        weights: ensemble weights (default equal).
        vote: per-pixel majority vote of each model's mask (at ``rule``'s threshold) instead of the
            mean of probabilities.
        rule: the probability → mask rule (threshold, post-processing, gates).
        tile: window side for images larger than it (a multiple of 32).
        overlap: pixels shared by neighbouring windows.
        batch_size: windows per ``predict_on_batch`` call, or ``auto``: as many ``tile``-sized
            windows as fit the device's memory budget (``runtime.device.batch_size_from``).
    """

    models: list
    tta: str = "none"
    weights: Sequence[float] | None = None
    vote: bool = False
    rule: MaskRule = field(default_factory=MaskRule)
    tile: int = 512
    overlap: int = 128
    batch_size: int | str = "auto"

    def __post_init__(self):
        tta_views.views(self.tta)
        if not self.models:
            raise ConfigError("a Predictor needs at least one model")
        self.models = [as_backend(model) for model in self.models]
        if any(isinstance(model, KerasBackend) for model in self.models):
            from buildings.runtime import install_patches

            install_patches()  # an entry point: Keras's torch backend as fast and lean as it goes here
        check_stride_multiple(self.tile, "tile")
        if not 0 <= self.overlap < self.tile:
            raise ConfigError(f"overlap must be in [0, tile), got {self.overlap}")
        if self.weights is not None and (len(self.weights) != len(self.models) or min(self.weights) < 0
                                         or sum(self.weights) <= 0):
            raise ConfigError(f"ensemble weights {list(self.weights)}: need {len(self.models)} non-negative "
                              "numbers with a positive sum, one per model")
        self.task = self.models[0].task
        if len({m.num_classes for m in self.models}) > 1:
            raise ConfigError(f"the models disagree on the number of classes: {[m.num_classes for m in self.models]}")
        self.rule = dataclasses.replace(self.rule, majority=self.vote).check(self.task)
        if self.batch_size == "auto":
            from buildings.runtime.device import batch_size_from

            self.batch_size = batch_size_from([m.activation_profile(self.tile, self.tile) for m in self.models],
                                              budget=min(m.memory_budget() for m in self.models))
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive number or auto, got {self.batch_size!r}")

    @classmethod
    def from_checkpoints(cls, paths, **options) -> Predictor:
        """A predictor over the ``.keras`` (or exported ``.onnx``) checkpoints ``paths`` (see
        ``backends.load_checkpoints``)."""
        from buildings.inference.backends import load_checkpoints

        return cls(load_checkpoints(paths), **options)

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    # -- windows -------------------------------------------------------------------------------
    def describe(self) -> str:
        """``2 model(s), tta flip, torch on cpu``."""
        return f"{len(self.models)} model(s), tta {self.tta}, {self.models[0].describe()}"

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        """Ensemble probabilities (B, h, w, C) of RGB uint8 windows."""
        weights = np.ones(len(self.models)) if self.weights is None else np.asarray(self.weights, float)
        weights = weights / weights.sum()
        total = 0.0
        windows = np.ascontiguousarray(windows)
        for weight, model in zip(weights, self.models, strict=True):
            probs = model.probabilities(windows, self.tta)
            if self.vote:
                probs = self.rule.ballots(probs)
            total = total + weight * probs
        return np.asarray(total, np.float32)

    # -- whole images --------------------------------------------------------------------------
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 probabilities for one RGB uint8 image of any size."""
        height, width = image.shape[:2]
        tile_h = min(self.tile, round_up_to_stride(height))
        tile_w = min(self.tile, round_up_to_stride(width))
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
            if h <= self.tile and w <= self.tile and h % STRIDE == 0 and w % STRIDE == 0:
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

    def stream(self, items: Iterable[tuple[str, Callable]]) -> Iterator[tuple[str, object, np.ndarray]]:
        """(name, loaded, probabilities) for each (name, loader) pair, loaded and predicted
        ``batch_size`` at a time: the one loop every command predicts through. ``loaded`` is what
        the loader returned: an image, or a tuple whose first item is the image ((image, truth))."""
        pending: list[tuple[str, object]] = []

        def flush():
            images = [loaded[0] if isinstance(loaded, tuple) else loaded for _, loaded in pending]
            batch = list(zip(pending, self.batch_probabilities(images), strict=True))
            pending.clear()
            for (name, loaded), probs in batch:
                yield name, loaded, probs

        for name, load in items:
            pending.append((name, load()))
            if len(pending) >= self.batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def mask(self, probs: np.ndarray) -> np.ndarray:
        """The mask of one whole image's probabilities, by :attr:`rule`."""
        return self.rule.mask(probs)
