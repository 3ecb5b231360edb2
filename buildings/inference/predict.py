"""Predicting a set of images into files: the submission, mask PNGs, overlays.

    report = write_predictions(predictor, iter_images("test_a.zip"), "submission.csv")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from buildings.errors import DataError, ImageReadError
from buildings.files import check_writable_folder, refuse_overwrites
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


def _check_names(names: list[str], writers: list) -> None:
    """Refuse inputs named twice, and inputs whose outputs would share a file name."""
    seen: dict[str, str] = {}
    for name in names:
        if name in seen:
            raise ImageReadError(f"two input images are named {name!r}")
        seen[name] = name
    for writer in writers:
        outputs: dict[str, str] = {}
        for name in names:
            output = writer.output_name(name)
            if output in outputs:
                raise DataError(f"images {outputs[output]!r} and {name!r} would both be written as {output!r}")
            outputs[output] = name


def write_predictions(predictor: Predictor, items: Iterable, out=None, *,
                      save_masks=None, save_overlays=None, output_format: str = "auto",
                      data_task: Task | None = None, inputs=(),
                      progress: Callable[[int], None] | None = None) -> PredictionReport:
    """Predict ``items`` ((name, loader) pairs, e.g. ``formats.images.iter_images`` or
    ``data.splits.split_items``) and write the submission ``out`` (RLE file or result.zip, see
    ``writers.open_writers``) plus optional mask / overlay PNG folders; masks by ``predictor.rule``.

    ``data_task``: the task of the dataset the items come from; a model of another task (a 4-class
    model on the binary test split) is refused before anything is predicted. When ``items`` is a
    list, two images whose outputs would share a name (``a.jpg`` and ``a.png`` with mask PNGs) are
    refused up front too, and so is an output that would replace one of ``inputs`` (the files the
    items are read from) or another output of the run (``files.refuse_overwrites``).

    Nothing is left behind on error: every output is staged and moved into place only after the
    last image has been predicted and written.
    """
    task = predictor.task
    if data_task is not None:
        task.check_same(data_task, "the model", "the dataset")
    writers = open_writers(task, out, output_format=output_format, save_masks=save_masks,
                           save_overlays=save_overlays)
    if out is not None:  # written last: its folder is checked first, so a typo costs no prediction
        check_writable_folder(Path(out).parent, out)
    if isinstance(items, Sequence):
        names = [name for name, _ in items]
        _check_names(names, writers)
        refuse_overwrites(inputs, [(w.what, p) for w in writers for p in w.output_paths(names)])
    report = PredictionReport(task=task, class_pixels=[0] * task.score_classes)
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        for writer in writers:
            stack.enter_context(writer)
        def named(pairs):  # a name twice is refused as soon as it is seen, even from a stream
            for name, load in pairs:
                if name in seen:
                    raise ImageReadError(f"two input images are named {name!r}")
                seen.add(name)
                yield name, load

        for name, image, probs in predictor.stream(named(items)):
            mask = predictor.mask(probs)
            counts = np.bincount(mask.ravel(), minlength=task.score_classes)[:task.score_classes]
            report.class_pixels = [a + int(b) for a, b in zip(report.class_pixels, counts, strict=True)]
            report.empty += int(not counts[1:].any())
            report.names.append(name)
            for writer in writers:
                writer.add(name, image, mask)
            if progress:
                progress(1)
    return report
