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

from buildings.errors import ConfigError
from buildings.files import write_bytes
from buildings.formats.rle import CONTEST_SHAPE, encode_rle
from buildings.formats.submission import write_submission

__all__ = ["synth_parcel_scene", "synth_scene", "write_synthetic_contest", "write_synthetic_parcels"]


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


def _buildings(rng, image, size, n_buildings) -> np.ndarray:
    """Draw ``n_buildings`` roofs with cast shadows into ``image``; returns their {0,1} footprints."""
    mask = np.zeros((size, size), np.uint8)
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
    return mask


def synth_scene(rng: np.random.Generator, size: int = CONTEST_SHAPE[0], p_empty: float = 0.25):
    """One scene: (BGR uint8 image, uint8 {0,1} mask)."""
    image = _ground(rng, size)
    _roads(rng, image, size)
    n_buildings = 0 if rng.random() < p_empty else int(rng.integers(1, 14))
    mask = _buildings(rng, image, size, n_buildings)
    _trees(rng, image, size, int(rng.integers(0, 25)))
    image = cv2.GaussianBlur(image, (3, 3), 0.8)
    return np.clip(image, 0, 255).astype(np.uint8), mask


# Land-cover kinds drawn by synth_parcel_scene, and the class index of each kind per class count.
KINDS = ("building", "farmland", "forest", "other")
KIND_CLASSES = {2: (1, 0, 0, 0), 4: (0, 1, 2, 3), 7: (0, 1, 2, 6)}


def synth_parcel_scene(rng: np.random.Generator, size: int = 256, num_classes: int = 4,
                       p_unlabelled: float = 0.4):
    """One multi-class scene: (BGR uint8 image, uint8 labels). Striped farmland fields, forest
    patches of dense crowns, buildings, and other ground (roads, bare soil); labels are class
    indices (``KIND_CLASSES``), and with probability ``p_unlabelled`` a box is 255 (unlabelled)."""
    if num_classes not in KIND_CLASSES:
        raise ConfigError(f"synthetic parcels come in {sorted(KIND_CLASSES)} classes, not {num_classes}")
    image = _ground(rng, size)
    kind = np.full((size, size), KINDS.index("other"), np.uint8)
    _roads(rng, image, size)
    for _ in range(int(rng.integers(0, 3))):  # fields: rotated rectangles with crop rows
        field = np.zeros((size, size), np.uint8)
        cv2.fillPoly(field, [_field(rng, size)], 1)
        rows = (np.add.outer(np.arange(size), np.arange(size) * rng.uniform(-0.5, 0.5)) // rng.integers(3, 7)) % 2
        colour = np.where(rows[..., None] > 0, (40, 120, 110), (50, 95, 140)).astype(np.float32)
        image[field > 0] = colour[field > 0] + rng.normal(0, 6, (int(field.sum()), 3))
        kind[field > 0] = KINDS.index("farmland")
    for _ in range(int(rng.integers(0, 3))):  # forest: a patch filled with dark crowns
        forest = np.zeros((size, size), np.uint8)
        centre = rng.integers(0, size, 2)
        axes = rng.integers(size // 10, size // 3, 2)
        cv2.ellipse(forest, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
        image[forest > 0] = (30, 60, 35)
        ys, xs = np.nonzero(forest)
        for i in rng.choice(len(ys), size=min(len(ys), 60), replace=False) if len(ys) else []:
            radius = int(rng.integers(3, 9))
            cv2.circle(image, (int(xs[i]), int(ys[i])), radius,
                       (float(rng.uniform(25, 45)), float(rng.uniform(75, 110)), float(rng.uniform(30, 50))), -1)
        kind[forest > 0] = KINDS.index("forest")
    n_buildings = 0 if rng.random() < 0.2 else int(rng.integers(1, 8))
    kind[_buildings(rng, image, size, n_buildings) > 0] = KINDS.index("building")
    labels = np.asarray(KIND_CLASSES[num_classes], np.uint8)[kind]
    if rng.random() < p_unlabelled:
        y, x = rng.integers(0, size * 3 // 4, 2)
        h, w = rng.integers(size // 10, size // 3, 2)
        labels[y:y + h, x:x + w] = 255
    image = cv2.GaussianBlur(image, (3, 3), 0.8)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _field(rng, size) -> np.ndarray:
    cx, cy = rng.uniform(0.1, 0.9, 2) * size
    w, h = rng.uniform(0.2, 0.6, 2) * size
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.round(pts @ rot.T + [cx, cy]).astype(np.int32)


def write_synthetic_parcels(out, n: int = 32, *, num_classes: int = 4, seed: int = 0, size: int = 256,
                            test_fraction: float = 0.25, quality: int = 90) -> dict[str, Path]:
    """Write ``n`` synthetic multi-class tiles in the 地块分割 folder layout: ``img_train/*.jpg``,
    ``lab_train/*.png`` (class indices, 255 = unlabelled), ``img_testA/*.jpg``, plus
    ``lab_testA/*.png`` (truth, for local scoring)."""
    if n < 2:
        raise ConfigError(f"n must be at least 2 (one train and one test tile), got {n}")
    from buildings.formats.label_maps import encode_label_png

    out = Path(out)
    folders = {key: out / key for key in ("img_train", "lab_train", "img_testA", "lab_testA")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(n * test_fraction)))
    for index in range(n):
        image, labels = synth_parcel_scene(rng, size, num_classes)
        stem = f"P{seed:03d}{index:05d}"
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        images, truth = ("img_train", "lab_train") if index < n - n_test else ("img_testA", "lab_testA")
        write_bytes(folders[images] / f"{stem}.jpg", jpeg.tobytes())
        write_bytes(folders[truth] / f"{stem}.png", encode_label_png(labels))
    return folders


def _zip_images(path: Path, folder: str, images: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in images.items():
            archive.writestr(f"{folder}/{name}", data)
    write_bytes(path, buffer.getvalue())


def write_synthetic_contest(out, n: int = 64, *, seed: int = 0, size: int = CONTEST_SHAPE[0], test_fraction: float = 0.25,
                            quality: int = 90) -> dict[str, Path]:
    """Write ``n`` synthetic tiles as the contest download (``train.zip``, ``train_mask.csv.zip``,
    ``test_a.zip``, ``test_a_samplesubmit.csv``) plus ``test_a_mask.csv`` (truth, for local scoring)."""
    if n < 2:
        raise ConfigError(f"n must be at least 2 (one train and one test tile), got {n}")
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
    write_bytes(paths["train_mask.csv.zip"], buffer.getvalue())
    write_submission(paths["test_a_samplesubmit.csv"], {name: "1 1" for name in test_images})
    write_submission(paths["test_a_mask.csv"], test_masks)
    return paths
