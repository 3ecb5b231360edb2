"""Masks drawn over images, pixel for pixel (``predict --save-overlays``); figures with titles,
legends and scores are in ``buildings.figures``.

An overlay PNG of ``predict --save-overlays`` is :func:`overlay_tile`: the tile with its mask drawn
in (:meth:`buildings.task.Task.overlay`: buildings tinted and outlined, or class colours), pixel for
pixel, above a caption strip that names the tile and says what each colour is, as the panels of the
demo's ``overlay.png`` do."""

from __future__ import annotations

import cv2
import numpy as np

from buildings.task import IGNORE_INDEX

__all__ = ["BUILDING", "PALETTE", "caption", "outline", "overlay_labels", "overlay_legend", "overlay_mask",
           "overlay_tile"]

# RGB colours of class indices 0..7 in overlays (then repeating); unlabelled (255) is left untinted.
PALETTE = np.array([(230, 25, 75), (255, 225, 25), (60, 180, 75), (170, 170, 170), (0, 130, 200),
                    (245, 130, 48), (145, 30, 180), (70, 240, 240)], np.uint8)
BUILDING = (255, 220, 0)  # RGB of a predicted building in a binary overlay

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK, _PAPER = (20, 20, 20), (245, 245, 242)


def overlay_mask(image_rgb: np.ndarray, mask: np.ndarray, colour=BUILDING, alpha: float = 0.35) -> np.ndarray:
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


def overlay_legend(task, mask: np.ndarray) -> list[tuple[tuple[int, int, int], str]]:
    """(RGB colour, label) of what :meth:`Task.overlay <buildings.task.Task.overlay>` draws for
    ``mask``: the building colour, or each class the mask holds, by name."""
    if task.binary:
        return [(BUILDING, f"building (predicted): {int(np.count_nonzero(mask))} px")]
    names = task.class_names
    return [(tuple(int(v) for v in PALETTE[c % len(PALETTE)]), names[c] if c < len(names) else f"class {c}")
            for c in (int(c) for c in np.unique(mask)) if c != IGNORE_INDEX]


def caption(image_rgb: np.ndarray, name: str, legend) -> np.ndarray:
    """``image_rgb`` (unchanged, pixel for pixel) above a strip naming it (``name``; characters
    OpenCV cannot draw become ``?``) and listing ``legend`` (RGB colour, label) as swatches, wrapped
    to the image's width."""
    width = image_rgb.shape[1]
    scale = float(np.clip(width / 900, 0.35, 0.6))
    thickness = 1
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line, pad = text_h + baseline + 6, 4
    items = [(None, "".join(c if 32 <= ord(c) < 127 else "?" for c in name))]
    items += [(colour, label) for colour, label in legend]
    placed, x, row = [], pad, 0  # (colour, label, x, row)
    for colour, label in items:
        swatch = text_h + 4 if colour is not None else 0
        size = swatch + cv2.getTextSize(label, _FONT, scale, thickness)[0][0]
        if x > pad and x + size > width - pad:
            x, row = pad, row + 1
        placed.append((colour, label, x, row))
        x += size + 3 * pad
    strip = np.full((line * (row + 1) + pad, width, 3), _PAPER, np.uint8)
    for colour, label, x, row in placed:
        top = pad + row * line
        if colour is not None:
            cv2.rectangle(strip, (x, top + 1), (x + text_h, top + 1 + text_h), tuple(int(v) for v in colour), -1)
            cv2.rectangle(strip, (x, top + 1), (x + text_h, top + 1 + text_h), _INK, 1)
            x += text_h + 4
        cv2.putText(strip, label, (x, top + text_h + 1), _FONT, scale, _INK, thickness, cv2.LINE_AA)
    return np.concatenate([image_rgb, strip])


def overlay_tile(name: str, image_rgb: np.ndarray, mask: np.ndarray, task) -> np.ndarray:
    """The overlay PNG of one predicted tile (RGB): ``task.overlay(image_rgb, mask)`` above a caption
    with ``name`` and the legend of its colours (:func:`caption`, :func:`overlay_legend`)."""
    return caption(task.overlay(image_rgb, mask), name, overlay_legend(task, mask))
