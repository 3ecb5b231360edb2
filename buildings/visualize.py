"""Masks drawn over images, pixel for pixel (``predict --save-overlays``); figures with titles,
legends and scores are in ``buildings.figures``."""

from __future__ import annotations

import cv2
import numpy as np

from buildings.task import IGNORE_INDEX

__all__ = ["PALETTE", "outline", "overlay_labels", "overlay_mask"]

# RGB colours of class indices 0..7 in overlays (then repeating); unlabelled (255) is left untinted.
PALETTE = np.array([(230, 25, 75), (255, 225, 25), (60, 180, 75), (170, 170, 170), (0, 130, 200),
                    (245, 130, 48), (145, 30, 180), (70, 240, 240)], np.uint8)


def overlay_mask(image_rgb: np.ndarray, mask: np.ndarray, colour=(255, 220, 0), alpha: float = 0.35) -> np.ndarray:
    """``image_rgb`` with ``mask`` tinted in and outlined (RGB uint8)."""
    out = image_rgb.copy()
    on = mask.astype(bool)
    out[on] = (out[on] * (1 - alpha) + np.asarray(colour) * alpha).astype(np.uint8)
    return outline(out, on, colour)


def outline(image_rgb: np.ndarray, mask: np.ndarray, colour, thickness: int = 2) -> np.ndarray:
    """Draw the contours of ``mask`` on ``image_rgb`` in place; returns it."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image_rgb, contours, -1, colour, thickness)
    return image_rgb


def overlay_labels(image_rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image_rgb`` tinted with the :data:`PALETTE` colour of each pixel's class (255 untinted)."""
    colours = PALETTE[labels % len(PALETTE)].astype(np.float32)
    shown = image_rgb.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = labels == IGNORE_INDEX
    shown[keep] = image_rgb[keep]
    return shown.astype(np.uint8)
