"""Looking at a built dataset: ``dataset_stats`` (counts, building or class fractions, channel
mean/std), ``class_pixel_counts`` and ``preview_grid`` (images with their mask drawn on top)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from buildings.data.splits import decode_record, open_split, record_name
from buildings.task import IGNORE_INDEX

__all__ = ["class_pixel_counts", "dataset_stats", "preview_grid"]


def class_pixel_counts(source, num_classes: int) -> list[int]:
    """Pixels of each class over the labelled records of a split (255 = unlabelled left out)."""
    counts = np.zeros(num_classes, np.int64)
    for index in range(len(source)):
        record = source[index]
        if not bool(record.get("has_mask", True)):
            continue
        mask = cv2.imdecode(np.frombuffer(record["mask"], np.uint8), cv2.IMREAD_UNCHANGED)
        counts += np.bincount(mask.ravel(), minlength=256)[:num_classes]
    return counts.tolist()


def dataset_stats(data, *, splits=("train", "validation", "test"), data_dir=None,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Per split: images, images with a mask, empty masks, building-pixel fraction (binary) or the
    fraction of each class and of unlabelled pixels (multi-class), and the per-channel RGB mean / std
    (0..1 scale) over all pixels of the split."""
    result = {}
    for split in splits:
        source = open_split(data, split, data_dir)
        classes = np.zeros(256, np.int64)
        pixel_sum = np.zeros(3)
        pixel_sq = np.zeros(3)
        n_pixels = building = empty = labelled = 0
        for index in range(len(source)):
            record = source[index]
            image, mask = decode_record(record)
            flat = image.reshape(-1, 3).astype(np.float64) / 255.0
            pixel_sum += flat.sum(0)
            pixel_sq += (flat**2).sum(0)
            n_pixels += flat.shape[0]
            if bool(record.get("has_mask", True)):
                labelled += 1
                count = int(np.count_nonzero(mask))
                building += count
                empty += count == 0
                classes += np.bincount(mask.ravel(), minlength=256)
            if progress:
                progress(1)
        mean = pixel_sum / max(n_pixels, 1)
        std = np.sqrt(np.maximum(pixel_sq / max(n_pixels, 1) - mean**2, 0))
        labelled_pixels = n_pixels * labelled / max(len(source), 1)
        result[split] = {
            "images": len(source),
            "with_mask": labelled,
            "empty_masks": empty,
            "building_fraction": building / labelled_pixels if labelled else float("nan"),
            "num_classes": source.num_classes,
            "mean_rgb": mean.round(4).tolist(),
            "std_rgb": std.round(4).tolist(),
        }
        if not source.task.binary:
            del result[split]["building_fraction"]
            total = max(int(classes.sum()), 1)
            names = source.task.class_names
            result[split]["class_fraction"] = {
                names[i]: round(float(classes[i] / total), 5) for i in range(source.num_classes)}
            result[split]["unlabelled_fraction"] = round(float(classes[IGNORE_INDEX] / total), 5)
    return result


def preview_grid(data, out, *, split="train", n=16, columns=4, seed=0, data_dir=None) -> Path:
    """Write a figure of ``n`` random images of ``split`` with their masks, each named."""
    from buildings.figures import Panel, panels_figure

    source = open_split(data, split, data_dir)
    n = min(n, len(source))
    picks = np.random.default_rng(seed).choice(len(source), size=n, replace=False)
    panels = []
    for index in sorted(picks.tolist()):
        record = source[index]
        image, mask = decode_record(record)
        panels.append(Panel(record_name(record), image, truth=mask if bool(record.get("has_mask", True)) else None))
    title = f"{source.label} {split}: {n} random images of {len(source)}, with their masks"
    return panels_figure(out, panels, title=title, task=source.task, columns=columns)
