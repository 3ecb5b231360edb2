"""Looking at a built dataset: ``dataset_stats`` (counts, building fraction, channel mean/std) and
``preview_grid`` (images with their mask drawn on top)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from buildings.data.pipeline import decode_record, open_split

__all__ = ["dataset_stats", "overlay_mask", "preview_grid", "write_grid_png"]


def dataset_stats(data, *, splits=("train", "validation", "test"), data_dir=None,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Per split: images, images with a mask, empty masks, building-pixel fraction, and the
    per-channel RGB mean / std (0..1 scale) over all pixels of the split."""
    result = {}
    for split in splits:
        source = open_split(data, split, data_dir)
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
            "mean_rgb": mean.round(4).tolist(),
            "std_rgb": std.round(4).tolist(),
        }
    return result


def overlay_mask(image_rgb: np.ndarray, mask: np.ndarray, colour=(255, 220, 0), alpha: float = 0.35) -> np.ndarray:
    """``image_rgb`` with ``mask`` tinted in and outlined (RGB uint8)."""
    out = image_rgb.copy()
    on = mask.astype(bool)
    out[on] = (out[on] * (1 - alpha) + np.asarray(colour) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(on.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, colour, 2)
    return out


def preview_grid(data, out, *, split="train", n=16, columns=4, tile=256, seed=0, data_dir=None) -> Path:
    """Write a PNG grid of ``n`` random images of ``split`` with their masks overlaid, named."""
    source = open_split(data, split, data_dir)
    n = min(n, len(source))
    picks = np.random.default_rng(seed).choice(len(source), size=n, replace=False)
    tiles = []
    for index in sorted(picks.tolist()):
        record = source[index]
        image, mask = decode_record(record)
        shown = overlay_mask(image, mask) if bool(record.get("has_mask", True)) else image
        shown = cv2.resize(shown, (tile, tile), interpolation=cv2.INTER_AREA)
        name = record["name"].decode() if isinstance(record["name"], bytes) else str(record["name"])
        cv2.putText(shown, name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(shown, name, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(shown)
    return write_grid_png(out, tiles, columns=columns)


def write_grid_png(out, tiles: list[np.ndarray], *, columns: int = 4) -> Path:
    """Write equal-sized RGB ``tiles`` as a PNG grid, white where a row is short; atomically."""
    columns = max(1, min(columns, len(tiles)))
    height, width = tiles[0].shape[:2] if tiles else (1, 1)
    rows = max(1, -(-len(tiles) // columns))
    grid = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for k, shown in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = shown
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(png.tobytes())
    tmp.replace(out)
    return out
