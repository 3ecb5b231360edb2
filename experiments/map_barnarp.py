"""Experiment: barnarp's test area as 4 x 4 georeferenced GeoTIFFs through `buildings map`, the merged
building layer scored against the truth polygons with `buildings score-polygons`, with and without
`--regularize`.

Run:  python experiments/map_barnarp.py --checkpoint RUN/best.keras [--out /tmp/map-barnarp]

1. stitches the 50 test_a tiles (grid columns 12-16 of tiles.csv: 2560 x 5120 px) and their truth
   (test_a_mask.csv) — never the training area;
2. cuts them into 4 x 4 GeoTIFFs (640 x 1280 px) in SWEREF99 TM (EPSG:3006, Sweden's national grid),
   placed near Barnarp (Jönköping). The source gives no pixel size: 0.25 m is assumed (the common
   size of Swedish orthophotos), so areas in m² carry that assumption;
3. vectorises the truth mosaic as one raster (buildings.geo.vectorize.BuildingPolygons, the package's
   one home for masks to polygons) into truth.gpkg;
4. runs `buildings map` (the engine given, default ray with 2 actors) into plain/ and regularised/,
   and `buildings score-polygons` on each against truth.gpkg; also the pixel Dice of the merged masks
   against the truth mosaic.

Prints a markdown table (F1 at IoU 0.5, precision, recall, mean matched IoU, the boundary measure,
vertices per building, buildings, wall time).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiled_orthophoto import TILE, stitch  # noqa: E402

from buildings.formats.rle import decode_rle  # noqa: E402

EPSG = 3006
ORIGIN = (455_000.0, 6_404_000.0)  # SWEREF99 TM, near Barnarp
PIXEL = 0.25  # assumed (module docstring)
TEST_COLUMNS = range(12, 17)


def truth_mosaic(data: Path, rows) -> np.ndarray:
    n_rows = max(int(r["row"]) for r in rows) + 1
    truth = np.zeros((n_rows * TILE, len(TEST_COLUMNS) * TILE), np.uint8)
    masks = dict(line.split("\t", 1) for line in (data / "test_a_mask.csv").read_text().splitlines() if line)
    for r in rows:
        name = f"{r['id']}.jpg"
        if r["split"] != "test_a":
            continue
        col = int(r["col"]) - TEST_COLUMNS.start
        y, x = int(r["row"]) * TILE, col * TILE
        truth[y:y + TILE, x:x + TILE] = decode_rle(masks.get(name, "").strip(), (TILE, TILE))
    return truth


def write_tiles(image: np.ndarray, folder: Path, grid: int = 4) -> list[Path]:
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    height, width = image.shape[:2]
    th, tw = height // grid, width // grid
    paths = []
    for i in range(grid):
        for j in range(grid):
            part = image[i * th:(i + 1) * th, j * tw:(j + 1) * tw]
            transform = from_origin(ORIGIN[0] + j * tw * PIXEL, ORIGIN[1] - i * th * PIXEL, PIXEL, PIXEL)
            path = folder / f"barnarp_r{i}_c{j}.tif"
            with rasterio.open(path, "w", driver="GTiff", height=th, width=tw, count=3, dtype="uint8",
                               crs=f"EPSG:{EPSG}", transform=transform, tiled=True, compress="deflate") as out:
                out.write(np.moveaxis(part, -1, 0))
            paths.append(path)
    return paths


def truth_polygons(truth: np.ndarray, path: Path) -> int:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from buildings.geo.vectorize import BuildingPolygons, write_polygons

    polygons = BuildingPolygons(from_origin(*ORIGIN, PIXEL, PIXEL), simplify=1.0)
    polygons.add_block((0, 0), 0, 0, truth, truth.astype(np.float32))
    features = polygons.features()
    write_polygons(features, path, CRS.from_epsg(EPSG))
    return len(features)


def mosaic_dice(out: Path, truth: np.ndarray, grid: int = 4) -> float:
    import rasterio

    th, tw = truth.shape[0] // grid, truth.shape[1] // grid
    predicted = np.zeros_like(truth)
    for i in range(grid):
        for j in range(grid):
            with rasterio.open(out / "masks" / f"barnarp_r{i}_c{j}.tif") as dataset:
                predicted[i * th:(i + 1) * th, j * tw:(j + 1) * tw] = dataset.read(1)
    inter = float((predicted & truth).sum())
    return 2 * inter / max(float(predicted.sum() + truth.sum()), 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp")
    parser.add_argument("--out", type=Path, default=Path("/tmp/map-barnarp"))
    parser.add_argument("--engine", default="ray")
    parser.add_argument("--actors", default="2")
    parser.add_argument("--tta", default="flip")
    args = parser.parse_args()
    image, rows = stitch(args.data)
    image = image[:, TEST_COLUMNS.start * TILE:TEST_COLUMNS.stop * TILE]
    truth = truth_mosaic(args.data, rows)
    tiles = write_tiles(image, args.out / "tiles")
    truth_count = truth_polygons(truth, args.out / "truth.gpkg")
    print(f"{len(tiles)} GeoTIFFs of {image.shape[1] // 4}x{image.shape[0] // 4} px, EPSG:{EPSG}, {PIXEL} m pixels "
          f"(assumed); truth: {truth_count} buildings, {truth.mean():.2%} of pixels")
    table = []
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch")}
    for name, extra in (("plain", []), ("regularised", ["--regularize"])):
        out = args.out / name
        command = [sys.executable, "-m", "buildings", "map", str(args.out / "tiles"), "--checkpoint", args.checkpoint,
                   "--out", str(out), "--engine", args.engine, "--tta", args.tta, *extra]
        if args.engine == "ray":
            command += ["--actors", args.actors]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(f"{name}: map FAILED\n{done.stderr[-3000:]}")
            continue
        scored = subprocess.run([sys.executable, "-m", "buildings", "score-polygons", str(out / "buildings.gpkg"),
                                 str(args.out / "truth.gpkg"), "--json"], env=env, capture_output=True, text=True)
        if scored.returncode != 0:
            print(f"{name}: score-polygons FAILED\n{scored.stderr[-2000:]}")
            continue
        score = json.loads(scored.stdout)
        summary = json.loads((out / "summary.json").read_text())
        table.append((name, score, summary, wall, mosaic_dice(out, truth)))
    print(f"\ncheckpoint {args.checkpoint}, tta {args.tta}, engine {args.engine}"
          f"{' x' + args.actors + ' actors' if args.engine == 'ray' else ''}\n")
    keys = sorted({k for _, s, *_ in table for k in s if isinstance(s[k], (int, float))})
    print("| layer | " + " | ".join(keys) + " | buildings | pixel Dice (mosaic) | map wall s |")
    print("|---|" + "---:|" * (len(keys) + 3))
    for name, score, summary, wall, dice in table:
        values = " | ".join(f"{score[k]:.4g}" if isinstance(score[k], float) else str(score[k]) for k in keys)
        print(f"| {name} | {values} | {summary['buildings']} | {dice:.4f} | {wall:.0f} |")


if __name__ == "__main__":
    csv.field_size_limit(1 << 24)
    main()
