"""Post-processing of predicted building masks: drop small components, fill holes, drop the whole
mask of a tile that looks empty (``buildings tune`` picks them on the validation split).

Both act on binary masks (``Task.binary``); a multi-class prediction is the argmax as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Postprocess", "fill_holes", "remove_small_components"]


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop connected components (8-connectivity) smaller than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels].astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border."""
    if not mask.any():
        return mask
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood == 0
    padded[holes] = 1
    return padded[1:-1, 1:-1]


@dataclass(frozen=True)
class Postprocess:
    """What to do to each predicted building mask: ``min_area`` (drop smaller components, pixels),
    then ``fill_holes``, then the empty-tile gate: the whole mask is dropped when fewer than
    ``empty_below_area`` pixels are left or when the tile's highest building probability is below
    ``empty_below_peak`` (an empty tile with one false pixel scores 0 in the contest). The default
    does nothing."""

    min_area: int = 0
    fill_holes: bool = False
    empty_below_area: int = 0
    empty_below_peak: float = 0.0

    @property
    def active(self) -> bool:
        return self.min_area > 1 or self.fill_holes or self.empty_below_area > 0 or self.empty_below_peak > 0

    def check(self, task) -> Postprocess:
        """Refuse binary post-processing for a multi-class task; returns self."""
        task.check_binary_postprocessing(self.active)
        return self

    def __call__(self, mask: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        mask = remove_small_components(mask, self.min_area)
        if self.fill_holes:
            mask = fill_holes(mask)
        if self.empty_below_area and np.count_nonzero(mask) < self.empty_below_area:
            return np.zeros_like(mask)
        if self.empty_below_peak and probabilities is not None and float(np.max(probabilities)) < self.empty_below_peak:
            return np.zeros_like(mask)
        return mask

    def describe(self) -> str:
        parts = [f"min-area {self.min_area}" if self.min_area > 1 else "",
                 "fill holes" if self.fill_holes else "",
                 f"empty below {self.empty_below_area} px" if self.empty_below_area else "",
                 f"empty below peak probability {self.empty_below_peak:g}" if self.empty_below_peak else ""]
        return ", ".join(p for p in parts if p) or "no post-processing"
