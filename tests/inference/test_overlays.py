"""``predict --save-overlays``: each PNG is the tile with its mask drawn in, pixel for pixel, above a
caption that names the tile and says what each colour is (``visualize.overlay_tile``)."""

from __future__ import annotations

import cv2
import numpy as np

from buildings.task import Task
from buildings.visualize import BUILDING, PALETTE, caption, overlay_tile


def _tile(height=96, width=128):
    image = np.full((height, width, 3), 90, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[20:50, 30:90] = 1
    return image, mask


def _has_colour(strip: np.ndarray, colour) -> bool:
    return bool(np.all(strip == np.asarray(colour, np.uint8), axis=-1).any())


def test_a_binary_overlay_keeps_the_tile_and_captions_it_with_a_legend():
    image, mask = _tile()
    task = Task(1)
    out = overlay_tile("a.jpg", image, mask, task)
    height = image.shape[0]
    assert out.shape[1] == image.shape[1] and out.shape[0] > height
    assert np.array_equal(out[:height], task.overlay(image, mask))  # the overlay, pixel for pixel
    strip = out[height:]
    assert _has_colour(strip, BUILDING)  # the legend's swatch: the building colour of the overlay
    assert not _has_colour(out[height:], PALETTE[0])


def test_the_caption_names_the_tile():
    image, mask = _tile()
    strips = {name: overlay_tile(name, image, mask, Task(1))[image.shape[0]:] for name in ("a.jpg", "b.jpg")}
    again = overlay_tile("a.jpg", image, mask, Task(1))[image.shape[0]:]
    assert np.array_equal(strips["a.jpg"], again)
    assert not np.array_equal(strips["a.jpg"], strips["b.jpg"])  # the name is drawn, not a fixed text
    wide = caption(np.zeros((10, 64, 3), np.uint8), "x" * 60, [])  # too long for one line: wrapped, not cut off
    assert wide.shape[1] == 64


def test_a_multiclass_overlay_lists_the_classes_it_shows():
    task = Task(4, ("background", "building", "road", "water"))
    image = np.full((64, 96, 3), 120, np.uint8)
    labels = np.zeros((64, 96), np.uint8)  # background in rows 40..49
    labels[:20] = 1
    labels[20:40] = 2
    labels[50:] = 255  # unlabelled: untinted, not in the legend
    out = overlay_tile("tile_0001.tif", image, labels, task)
    strip = out[image.shape[0]:]
    for shown in (0, 1, 2):
        assert _has_colour(strip, PALETTE[shown]), shown
    assert not _has_colour(strip, PALETTE[3])  # water is not in this tile


def test_save_overlays_writes_the_captioned_overlay(tmp_path):
    from buildings.inference.writers import OverlayFolder

    image, mask = _tile()
    with OverlayFolder(tmp_path / "overlays", Task(1)) as folder:
        folder.add("a.jpg", image, mask)
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "overlays" / "a.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, overlay_tile("a.jpg", image, mask, Task(1)))
