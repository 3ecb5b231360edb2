"""Predicting a set of images into files: the submission, mask PNGs, overlays.

    report = write_predictions(predictor, iter_images("test_a.zip"), "submission.csv")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from buildings.errors import ImageReadError
from buildings.inference.postprocess import Postprocess
from buildings.inference.predictor import Predictor
from buildings.inference.writers import open_writers
from buildings.task import Task

__all__ = ["PredictionReport", "write_predictions"]


@dataclass
class PredictionReport:
    """What a prediction produced: image names in order, predicted pixels per class over all
    images (a binary task counts background and building), and images with no building /
    foreground class."""

    task: Task
    names: list[str] = field(default_factory=list)
    class_pixels: list[int] = field(default_factory=list)
    empty: int = 0

    def describe(self) -> str:
        """One line for people: ``50 images, 27 with no building`` or the class shares."""
        if self.task.binary:
            return f"{len(self.names)} images, {self.empty} with no building"
        total = max(sum(self.class_pixels), 1)
        shares = " ".join(f"{100 * c / total:.1f}" for c in self.class_pixels)
        return f"{len(self.names)} images; predicted class shares % {shares}"


def write_predictions(predictor: Predictor, items: Iterable, out=None, *, postprocess: Postprocess | None = None,
                      save_masks=None, save_overlays=None, output_format: str = "auto",
                      progress: Callable[[int], None] | None = None) -> PredictionReport:
    """Predict ``items`` ((name, loader) pairs, e.g. ``formats.images.iter_images`` or
    ``data.splits.split_items``) and write the submission ``out`` (RLE file or result.zip, see
    ``writers.open_writers``) plus optional mask / overlay PNG folders.

    Nothing is left behind on error: every output is staged and moved into place only after the
    last image has been predicted and written.
    """
    task = predictor.task
    postprocess = (postprocess or Postprocess()).check(task)
    writers = open_writers(task, out, output_format=output_format, save_masks=save_masks,
                           save_overlays=save_overlays)
    report = PredictionReport(task=task, class_pixels=[0] * task.score_classes)
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        for writer in writers:
            stack.enter_context(writer)
        pending: list[tuple[str, np.ndarray]] = []

        def flush():
            probabilities = predictor.batch_probabilities([image for _, image in pending])
            for (name, image), probs in zip(pending, probabilities, strict=True):
                mask = postprocess(predictor.mask(probs))  # checked above: a no-op for N classes
                counts = np.bincount(mask.ravel(), minlength=task.score_classes)[:task.score_classes]
                report.class_pixels = [a + int(b) for a, b in zip(report.class_pixels, counts, strict=True)]
                report.empty += int(not counts[1:].any())
                report.names.append(name)
                for writer in writers:
                    writer.add(name, image, mask)
                if progress:
                    progress(1)
            pending.clear()

        for name, load in items:
            if name in seen:
                raise ImageReadError(f"two input images are named {name!r}")
            seen.add(name)
            pending.append((name, load()))
            if len(pending) >= predictor.batch_size:
                flush()
        if pending:
            flush()
    return report
