"""Synthetic contest data: plausible aerial scenes written in the exact Tianchi download layout.

Used by ``buildings demo`` and by tests that must not depend on ../shared. A scene has textured
ground (grass / soil, low-frequency colour variation and grain), roads, tree crowns with shade, and
buildings: rotated rectangles and L-shapes with a two-tone (gable) or flat roof and a shadow cast
to one side. About a quarter of the tiles hold no building, as in the real data. The mask is the
roof footprints.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

from buildings.rle import encode_rle
from buildings.submission import write_submission

__all__ = ["synth_scene", "write_synthetic_contest"]


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.choice([(70, 110, 80), (85, 120, 95), (95, 115, 120), (80, 100, 105)])  # BGR
    cells = (size // 64 + 2, size // 64 + 2)
    light = rng.normal(0, 1, (*cells, 1)) * 14 + rng.normal(0, 1, (*cells, 3)) * 4  # mostly brightness
    low = cv2.resize(light.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 7, (size, size, 3)).astype(np.float32)
    return np.asarray(base, np.float32) + low + grain


def _roads(rng, image, size):
    for _ in range(rng.integers(0, 3)):
        p1 = rng.integers(0, size, 2)
        p2 = rng.integers(0, size, 2)
        width = int(rng.integers(10, 26))
        shade = float(rng.uniform(105, 150))
        cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)), (shade, shade, shade + 4), width, cv2.LINE_AA)


def _trees(rng, image, size, n):
    for _ in range(n):
        center = tuple(int(v) for v in rng.integers(0, size, 2))
        radius = int(rng.integers(6, 20))
        cv2.circle(image, (center[0] + radius // 3, center[1] + radius // 3), radius, (25, 40, 30), -1, cv2.LINE_AA)
        green = (float(rng.uniform(30, 50)), float(rng.uniform(70, 100)), float(rng.uniform(35, 55)))
        cv2.circle(image, center, radius, green, -1, cv2.LINE_AA)


def _footprint(rng, size) -> np.ndarray:
    """A rotated rectangle or L-shape, as an int32 polygon."""
    cx, cy = rng.uniform(0.08, 0.92, 2) * size
    w, h = rng.uniform(18, 70), rng.uniform(14, 50)
    if rng.random() < 0.3:  # L-shape
        pts = np.array([[0, 0], [w, 0], [w, h * 0.5], [w * 0.5, h * 0.5], [w * 0.5, h], [0, h]])
    else:
        pts = np.array([[0, 0], [w, 0], [w, h], [0, h]])
    pts = pts - pts.mean(axis=0)
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.round(pts @ rot.T + [cx, cy]).astype(np.int32)


def synth_scene(rng: np.random.Generator, size: int = 512, p_empty: float = 0.25):
    """One scene: (BGR uint8 image, uint8 {0,1} mask)."""
    image = _ground(rng, size)
    _roads(rng, image, size)
    mask = np.zeros((size, size), np.uint8)
    n_buildings = 0 if rng.random() < p_empty else int(rng.integers(1, 14))
    shadow = np.array(rng.integers(3, 9, 2))
    roofs = []
    for _ in range(n_buildings):
        poly = _footprint(rng, size)
        cv2.fillPoly(image, [poly + shadow], (35, 40, 45), cv2.LINE_AA)  # cast shadow
        roofs.append(poly)
    for poly in roofs:
        colour = rng.choice([(70, 70, 160), (150, 150, 150), (200, 200, 205), (60, 80, 120), (120, 110, 100)])
        colour = np.asarray(colour, np.float32) + rng.normal(0, 10, 3)
        cv2.fillPoly(image, [poly], tuple(float(c) for c in colour), cv2.LINE_AA)
        if rng.random() < 0.6:  # gable roof: darker half
            half = np.zeros((size, size), np.uint8)
            cv2.fillPoly(half, [poly], 1)
            (x, y), (w, h), angle = cv2.minAreaRect(poly)
            normal = np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))])
            yy, xx = np.nonzero(half)
            side = ((xx - x) * normal[0] + (yy - y) * normal[1]) > 0
            image[yy[side], xx[side]] *= 0.78
        cv2.fillPoly(mask, [poly], 1)
    _trees(rng, image, size, int(rng.integers(0, 25)))
    image = cv2.GaussianBlur(image, (3, 3), 0.8)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _zip_images(path: Path, folder: str, images: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in images.items():
            archive.writestr(f"{folder}/{name}", data)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def write_synthetic_contest(out, n: int = 64, *, seed: int = 0, size: int = 512, test_fraction: float = 0.25,
                            quality: int = 90) -> dict[str, Path]:
    """Write ``n`` synthetic tiles as the contest download (``train.zip``, ``train_mask.csv.zip``,
    ``test_a.zip``, ``test_a_samplesubmit.csv``) plus ``test_a_mask.csv`` (truth, for local scoring)."""
    if n < 2:
        raise ValueError(f"n must be at least 2 (one train and one test tile), got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(n * test_fraction)))
    train_images, test_images, train_masks, test_masks = {}, {}, {}, {}
    for index in range(n):
        image, mask = synth_scene(rng, size)
        name = f"synth{seed:03d}_{index:05d}.jpg"
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        if index < n - n_test:
            train_images[name], train_masks[name] = jpeg.tobytes(), encode_rle(mask)
        else:
            test_images[name], test_masks[name] = jpeg.tobytes(), encode_rle(mask)
    paths = {name: out / name for name in (
        "train.zip", "train_mask.csv.zip", "test_a.zip", "test_a_samplesubmit.csv", "test_a_mask.csv")}
    _zip_images(paths["train.zip"], "train", train_images)
    _zip_images(paths["test_a.zip"], "test_a", test_images)
    csv_text = "".join(f"{name}\t{rle}\n" for name, rle in train_masks.items()).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train_mask.csv", csv_text)
    paths["train_mask.csv.zip"].write_bytes(buffer.getvalue())
    write_submission(paths["test_a_samplesubmit.csv"], {name: "1 1" for name in test_images})
    write_submission(paths["test_a_mask.csv"], test_masks)
    return paths
