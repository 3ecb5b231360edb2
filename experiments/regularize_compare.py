"""Footprint regularisation compared on real footprints: which method ``buildings.geo.regularize`` uses.

Data: the Barnarp sample (``../shared/data/barnarp``, 170 real 512x512 tiles of one orthophoto with
footprint masks from a building database; SOURCE.md): the truth masks of all tiles
(``train_mask.csv.zip`` and ``test_a_mask.csv``, RLE decoded by ``buildings.formats.rle``) stitched
at their grid positions (``tiles.csv``) into the orthophoto's 8704x5120 mask, so that no building
is cut by a tile edge, 0.3 m pixels (``Affine(0.3, 0, 0, 0, -0.3, 0)``), traced into truth polygons by
``BuildingPolygons`` without simplification: the pixel outline is the truth as given, within half a
pixel (0.15 m) of the database's footprints; a simplified truth would have vertices where the
simplification put them, and PoLiS, which measures vertex to boundary both ways, would reward
outlines simplified the same way.

"Predictions" without a trained model: each truth mask degraded the way a segmentation network
degrades one, then thresholded at 0.5:

* Gaussian blur of the 0/1 mask, sigma ``--blur`` pixels (2): a network's probabilities are smooth
  across a boundary, so corners come out rounded and thin parts thinner;
* plus smooth random noise near the boundary, amplitude ``--noise`` (0.25, Gaussian noise blurred by
  3 px and scaled to unit standard deviation, times ``4p(1-p)`` of the blurred mask ``p`` so that it
  acts where a network is unsure, not in open fields; seeded by ``--seed``):
  boundaries wander by a pixel or two, as a network's do along shadows and roof edges;
* buildings under 20 pixels dropped (``BuildingPolygons(min_area=20)``), as ``--min-area`` would.

The degraded masks are traced without simplification (``simplify=0``: the pixel staircase, the
raw input of every method) and each method is scored against the truth polygons with
``buildings.geo.polygon_metrics.score_polygons``: F1 at IoU >= 0.5, mean IoU and PoLiS (m) of the
matched buildings, vertices per building, the share of corners within 10° of a right angle (or
straight; a pixel staircase has nothing else, so it is not counted for one), and wall time per 1000 buildings (one core). A second table regularises the truth's own
outlines: how much each method moves a footprint that was right (the unchanged staircase is 1 and 0
there by construction).

    python experiments/regularize_compare.py            # ~1 minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np
import shapely
from affine import Affine

from buildings.formats.rle import CONTEST_SHAPE, decode_rle
from buildings.formats.submission import read_submission
from buildings.geo.polygon_metrics import score_polygons
from buildings.geo.regularize import METHODS, regularize_footprints, simplify_footprints
from buildings.geo.vectorize import BuildingPolygons

PIXEL = 0.3  # metres
MIN_AREA = 20  # pixels
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp"


def degrade(mask: np.ndarray, rng: np.random.Generator, blur: float, noise: float) -> np.ndarray:
    """The truth mask as a segmentation model's thresholded output: blurred, noisy, thresholded at 0.5."""
    probability = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), blur)
    field = cv2.GaussianBlur(rng.standard_normal(mask.shape).astype(np.float32), (0, 0), 3.0)
    field /= field.std() + 1e-12
    near_boundary = 4 * probability * (1 - probability)  # 1 on the blurred boundary, 0 inside and far away
    return (probability + noise * near_boundary * field >= 0.5).astype(np.uint8)


def trace(mask: np.ndarray, transform, *, min_area: int = 0, simplify: float = 1.0) -> list:
    polygons = BuildingPolygons(transform=transform, min_area=min_area, simplify=simplify)
    polygons.add_block((0, 0), 0, 0, mask, mask)
    return [f["geometry"] for f in polygons.features()]


def right_angle_share(geoms: list, tolerance: float = 10.0) -> float:
    """Share of the corners (all rings) whose turn is within ``tolerance`` degrees of 90° or of 0°."""
    rings = shapely.get_rings(shapely.get_parts(np.asarray(geoms, dtype=object)))
    close = total = 0
    for ring in rings:
        xy = shapely.get_coordinates(ring)[:-1]
        a = np.roll(xy, -1, axis=0) - xy
        b = np.roll(a, -1, axis=0)
        turn = np.degrees(np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(axis=1))))
        off = np.minimum(np.abs(turn - 90), turn)
        close += int((off <= tolerance).sum())
        total += len(turn)
    return close / max(total, 1)


def run(method: str, geoms: list):
    start = time.perf_counter()
    if method == "traced (staircase)":
        out = list(geoms)
    elif method == "simplify 1 px":
        out = simplify_footprints(geoms, PIXEL)
    else:
        out = regularize_footprints(geoms, pixel_size=PIXEL, method=method)
    return out, time.perf_counter() - start


def table(title: str, truth: list, inputs: list) -> str:
    lines = [f"\n{title} ({len(inputs)} buildings in, {len(truth)} truth buildings)\n",
             "| method | F1 @0.5 | matched IoU | PoLiS (m) | vertices / building | right angles | ms / 1000 bldg |",
             "|---|---|---|---|---|---|---|"]
    for method in ("traced (staircase)", "simplify 1 px", *METHODS):
        out, seconds = run(method, inputs)
        assert len(out) == len(inputs) and all(shapely.is_valid(out)), method
        s = score_polygons(out, truth)
        square = "(pixel steps)" if method == "traced (staircase)" else f"{right_angle_share(out):.0%}"
        lines.append(f"| {method} | {s.f1:.3f} | {s.mean_iou:.3f} | {s.polis:.3f} | {s.vertices_pred:.1f} | "
                     f"{square} | {1e6 * seconds / max(len(inputs), 1):.0f} |")
    lines.append(f"\ntruth: the pixel outlines, {score_polygons(truth, truth).vertices_truth:.1f} vertices / building")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--blur", type=float, default=2.0)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = {**read_submission(args.data / "train_mask.csv.zip"), **read_submission(args.data / "test_a_mask.csv")}
    with open(args.data / "tiles.csv", newline="") as f:
        grid = {r["id"]: (int(r["row"]), int(r["col"])) for r in csv.DictReader(f)}
    height, width = (max(r for r, _ in grid.values()) + 1) * CONTEST_SHAPE[0], \
        (max(c for _, c in grid.values()) + 1) * CONTEST_SHAPE[1]
    mask = np.zeros((height, width), np.uint8)  # the orthophoto's mask, stitched: no building cut by a tile edge
    for name, rle in rows.items():
        row, col = grid[Path(name).stem]
        mask[row * CONTEST_SHAPE[0]:(row + 1) * CONTEST_SHAPE[0],
             col * CONTEST_SHAPE[1]:(col + 1) * CONTEST_SHAPE[1]] = decode_rle(rle, CONTEST_SHAPE)
    transform = Affine(PIXEL, 0, 0, 0, -PIXEL, 0)
    truth = trace(mask, transform, simplify=0)
    predicted = trace(degrade(mask, np.random.default_rng(args.seed), args.blur, args.noise), transform,
                      min_area=MIN_AREA, simplify=0)
    print(f"Barnarp: {len(rows)} tiles stitched into {width}x{height} px, 0.3 m pixels; degradation blur {args.blur} px, noise {args.noise}, "
          f"seed {args.seed}")
    print(table("Degraded masks (a model's output) against the truth", truth, predicted))
    print(table("The truth's own outlines regularised, against themselves", truth, truth))


if __name__ == "__main__":
    main()
