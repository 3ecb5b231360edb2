"""Experiment: tiled prediction of the stitched barnarp orthophoto (5120 x 8704 px) against
per-tile prediction, and a look for seams.

Run:  python experiments/tiled_orthophoto.py --checkpoint RUN/best.keras [--out experiments/ortho]

1. stitches the 170 barnarp tiles (train.zip + test_a.zip, placed by tiles.csv) into one image;
2. predicts it with overlapping 512 windows blended (the path `buildings predict --images` takes),
   and each 512 tile on its own;
3. compares the two away from the 512 grid (where per-tile prediction lacks context), measures
   the probability jump across the grid lines (a seam shows as a larger jump there than across
   other lines), scores both against the truth of the test_a tiles;
4. writes an overlay of a region around a grid crossing to look at.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import buildings  # noqa: E402,F401
from buildings.formats.rle import encode_rle  # noqa: E402
from buildings.formats.submission import read_submission, score_submission  # noqa: E402
from buildings.inference import Predictor, load_checkpoints  # noqa: E402
from buildings.visualize import overlay_mask  # noqa: E402

TILE = 512


def stitch(data: Path):
    rows = list(csv.DictReader(open(data / "tiles.csv")))
    n_rows = max(int(r["row"]) for r in rows) + 1
    n_cols = max(int(r["col"]) for r in rows) + 1
    image = np.zeros((n_rows * TILE, n_cols * TILE, 3), np.uint8)
    for zip_name in ("train.zip", "test_a.zip"):
        with zipfile.ZipFile(data / zip_name) as archive:
            members = {Path(m).stem: m for m in archive.namelist() if m.endswith(".jpg")}
            for r in rows:
                if r["id"] in members:
                    tile = cv2.imdecode(np.frombuffer(archive.read(members[r["id"]]), np.uint8), cv2.IMREAD_COLOR)
                    y, x = int(r["row"]) * TILE, int(r["col"]) * TILE
                    image[y:y + TILE, x:x + TILE] = cv2.cvtColor(tile, cv2.COLOR_BGR2RGB)
    return image, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--out", type=Path, default=Path("experiments/ortho"))
    parser.add_argument("--overlap", type=int, default=128)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    image, rows = stitch(args.data)
    height, width = image.shape[:2]
    print(f"orthophoto {width}x{height} px from {len(rows)} tiles")
    predictor = Predictor(load_checkpoints([args.checkpoint]), tile=TILE, overlap=args.overlap, batch_size=8)

    start = time.perf_counter()
    tiled = predictor.probabilities(image)[..., 0]
    t_tiled = time.perf_counter() - start
    start = time.perf_counter()
    per_tile = np.zeros_like(tiled)
    tiles = [(y, x) for y in range(0, height, TILE) for x in range(0, width, TILE)]
    for i in range(0, len(tiles), 8):
        chunk = tiles[i:i + 8]
        probs = predictor.batch_probabilities([image[y:y + TILE, x:x + TILE] for y, x in chunk])
        for (y, x), p in zip(chunk, probs, strict=True):
            per_tile[y:y + TILE, x:x + TILE] = p[..., 0]
    t_tiles = time.perf_counter() - start
    print(f"tiled prediction {t_tiled:.0f} s (overlap {args.overlap}); per-tile prediction {t_tiles:.0f} s")

    margin = 64
    interior = np.ones((height, width), bool)
    for g in range(0, height, TILE):
        interior[max(g - margin, 0):g + margin] = False
    for g in range(0, width, TILE):
        interior[:, max(g - margin, 0):g + margin] = False
    diff = np.abs(tiled - per_tile)
    a, b = tiled > 0.5, per_tile > 0.5
    agree = (a == b)[interior].mean()
    dice = 2 * (a & b)[interior].sum() / max(a[interior].sum() + b[interior].sum(), 1)
    print(f"away from the 512 grid (>{margin} px): mean |p_tiled - p_tile| {diff[interior].mean():.4f}, "
          f"mask agreement {100 * agree:.2f}%, Dice between the masks {dice:.4f}")

    def jump(probs, lines, axis):
        if axis == 1:
            return float(np.mean([np.abs(probs[:, g] - probs[:, g - 1]).mean() for g in lines]))
        return float(np.mean([np.abs(probs[g] - probs[g - 1]).mean() for g in lines]))

    grid_v = list(range(TILE, width, TILE))
    off_v = [g + TILE // 2 for g in grid_v if g + TILE // 2 < width]
    grid_h = list(range(TILE, height, TILE))
    off_h = [g + TILE // 2 for g in grid_h if g + TILE // 2 < height]
    for label, probs in (("tiled", tiled), ("per-tile", per_tile)):
        on = (jump(probs, grid_v, 1) + jump(probs, grid_h, 0)) / 2
        off = (jump(probs, off_v, 1) + jump(probs, off_h, 0)) / 2
        print(f"{label:9s}: mean probability jump across 512-grid lines {on:.4f}, across lines between them "
              f"{off:.4f} (ratio {on / off:.2f})")

    truth = read_submission(args.data / "test_a_mask.csv")
    for label, probs in (("tiled", tiled), ("per-tile", per_tile)):
        rows_pred = {}
        for r in rows:
            name = f"{r['id']}.jpg"
            if name in truth:
                y, x = int(r["row"]) * TILE, int(r["col"]) * TILE
                rows_pred[name] = encode_rle(probs[y:y + TILE, x:x + TILE] > 0.5)
        score = score_submission(rows_pred, truth)
        print(f"{label:9s}: contest Dice on the 50 test_a tiles cut from it {score.dice:.4f} "
              f"(tiles with buildings {score.dice_with_buildings:.4f})")

    # a region around a grid crossing with buildings, for the eye
    built = [(int(r["row"]), int(r["col"])) for r in rows]
    best = max(((ry, cx) for ry, cx in built if 0 < ry < 9 and 0 < cx < 16),
               key=lambda rc: (tiled[rc[0] * TILE - 384:rc[0] * TILE + 384, rc[1] * TILE - 384:rc[1] * TILE + 384] > 0.5).sum())
    y, x = best[0] * TILE - 384, best[1] * TILE - 384
    for label, probs in (("tiled", tiled), ("per_tile", per_tile)):
        crop = overlay_mask(image[y:y + 768, x:x + 768], probs[y:y + 768, x:x + 768] > 0.5)
        cv2.line(crop, (384, 0), (384, 767), (255, 0, 255), 1)
        cv2.line(crop, (0, 384), (767, 384), (255, 0, 255), 1)
        cv2.imwrite(str(args.out / f"crossing_{label}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    small = cv2.resize(overlay_mask(image, tiled > 0.5), (width // 8, height // 8), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(args.out / "orthophoto_overlay_small.jpg"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}/crossing_tiled.png, crossing_per_tile.png (grid lines in magenta), "
          "orthophoto_overlay_small.jpg")


if __name__ == "__main__":
    main()
