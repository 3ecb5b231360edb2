"""Pictures for people: masks drawn over images, and PNG grids of them (dataset previews, the
worst images of an evaluation, the demo's overlays, ``predict --save-overlays``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from buildings.files import write_bytes
from buildings.task import IGNORE_INDEX

__all__ = ["PALETTE", "outline", "overlay_labels", "overlay_mask", "put_label", "write_grid_png"]

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


def put_label(image_rgb: np.ndarray, text: str, *, scale: float = 0.45) -> np.ndarray:
    """Write ``text`` in the top-left corner, white on a dark outline, in place; returns it."""
    cv2.putText(image_rgb, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image_rgb, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image_rgb


def write_grid_png(out, tiles: list[np.ndarray], *, columns: int = 4) -> Path:
    """Write equal-sized RGB ``tiles`` as a PNG grid, white where a row is short; atomically."""
    columns = max(1, min(columns, len(tiles)))
    height, width = tiles[0].shape[:2] if tiles else (1, 1)
    rows = max(1, -(-len(tiles) // columns))
    grid = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for k, shown in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = shown
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return write_bytes(out, png.tobytes())
