"""Looking at a built dataset: ``dataset_stats`` (counts, building or class fractions, channel
mean/std), ``class_pixel_counts`` and ``preview_grid`` (images with their mask drawn on top)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from buildings.data.pipeline import decode_record, open_split

__all__ = ["PALETTE", "class_pixel_counts", "dataset_stats", "overlay_labels", "overlay_mask", "preview_grid",
           "write_grid_png"]

# RGB colours of class indices 0..7 in overlays (then repeating); unlabelled (255) is left untinted.
PALETTE = np.array([(230, 25, 75), (255, 225, 25), (60, 180, 75), (170, 170, 170), (0, 130, 200),
                    (245, 130, 48), (145, 30, 180), (70, 240, 240)], np.uint8)


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
        if source.num_classes > 1:
            del result[split]["building_fraction"]
            total = max(int(classes.sum()), 1)
            names = source.class_names or tuple(f"class{i}" for i in range(source.num_classes))
            result[split]["class_fraction"] = {
                names[i]: round(float(classes[i] / total), 5) for i in range(source.num_classes)}
            result[split]["unlabelled_fraction"] = round(float(classes[255] / total), 5)
    return result


def overlay_mask(image_rgb: np.ndarray, mask: np.ndarray, colour=(255, 220, 0), alpha: float = 0.35) -> np.ndarray:
    """``image_rgb`` with ``mask`` tinted in and outlined (RGB uint8)."""
    out = image_rgb.copy()
    on = mask.astype(bool)
    out[on] = (out[on] * (1 - alpha) + np.asarray(colour) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(on.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, colour, 2)
    return out


def overlay_labels(image_rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image_rgb`` tinted with the :data:`PALETTE` colour of each pixel's class (255 untinted)."""
    colours = PALETTE[labels % len(PALETTE)].astype(np.float32)
    shown = image_rgb.astype(np.float32) * (1 - alpha) + colours * alpha
    keep = labels == 255
    shown[keep] = image_rgb[keep]
    return shown.astype(np.uint8)


def preview_grid(data, out, *, split="train", n=16, columns=4, tile=256, seed=0, data_dir=None) -> Path:
    """Write a PNG grid of ``n`` random images of ``split`` with their masks overlaid, named."""
    source = open_split(data, split, data_dir)
    n = min(n, len(source))
    picks = np.random.default_rng(seed).choice(len(source), size=n, replace=False)
    tiles = []
    for index in sorted(picks.tolist()):
        record = source[index]
        image, mask = decode_record(record)
        if not bool(record.get("has_mask", True)):
            shown = image
        else:
            shown = overlay_mask(image, mask) if source.num_classes == 1 else overlay_labels(image, mask)
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
