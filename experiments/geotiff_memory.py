"""Experiment (issue 17): peak memory of `buildings predict` on a GeoTIFF far larger than memory allows.

Writes a SIDE x SIDE 3-band uint8 GeoTIFF (UTM 33N, 0.3 m pixels; tiled, DEFLATE) filled window by
window with the project's synthetic aerial scenes (``data.synth``), then runs, under
``/usr/bin/time -v``,

    buildings predict --checkpoint MODEL --images big.tif --save-masks out/ --vectorize out/buildings.gpkg

and prints the maximum resident set size, the wall time, the mask's CRS / size and the polygon count.
MODEL defaults to a 1x1-convolution "brightness" model (the streaming itself: raster reads, blocks,
mask writes, polygons); pass ``--checkpoint`` for a trained model (its batch is capped by
``runtime.device.batch_size_for`` at 2 GiB of activations on a CPU).

    python experiments/geotiff_memory.py --side 20000 [--checkpoint runs/x/best.keras] [--out /tmp/geo]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_raster(path: Path, side: int, seed: int = 0) -> None:
    import cv2
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from buildings.data.synth import synth_scene

    rng = np.random.default_rng(seed)
    scenes = [cv2.cvtColor(synth_scene(rng, 512)[0], cv2.COLOR_BGR2RGB) for _ in range(24)]
    profile = {"driver": "GTiff", "height": side, "width": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(400000.0, 5500000.0, 0.3, 0.3), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as out:
        for row in range(0, side, 512):
            for col in range(0, side, 512):
                h, w = min(512, side - row), min(512, side - col)
                scene = scenes[int(rng.integers(len(scenes)))][:h, :w]
                out.write(np.moveaxis(scene, -1, 0), window=Window(col, row, w, h))


def brightness_model(path: Path) -> Path:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, 1)
    model = keras.Model(inputs, conv(inputs), name="brightness")
    conv.set_weights([(20 * IMAGENET_STD / 3).reshape(1, 1, 3, 1).astype("float32"),
                      np.array([20 * (IMAGENET_MEAN.sum() / 3 - 0.6)], "float32")])
    model.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--out", default="/tmp/geo-memory")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raster = out / f"ortho-{args.side}.tif"
    if not raster.exists():
        start = time.perf_counter()
        write_raster(raster, args.side)
        print(f"wrote {raster} ({raster.stat().st_size / 1e6:.0f} MB compressed, "
              f"{3 * args.side**2 / 1e9:.2f} GB raw) in {time.perf_counter() - start:.0f} s", flush=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else brightness_model(out / "brightness.keras")
    result = out / f"result-{args.side}-{checkpoint.stem}"
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "buildings.cli", "predict", "--checkpoint",
               str(checkpoint), "--images", str(raster), "--save-masks", str(result), "--vectorize",
               str(result / "buildings.gpkg"), "--min-area", "16"]
    print("$ " + " ".join(command[2:]), flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "torch"})
    print(done.stdout.strip())
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", done.stderr)
    if done.returncode or not rss:
        print(done.stderr[-3000:])
        raise SystemExit(f"predict failed ({done.returncode})")
    import rasterio

    with rasterio.open(result / f"{raster.stem}.tif") as mask:
        print(f"mask: {mask.width}x{mask.height}, {mask.crs}, compressed {mask.profile.get('compress')}")
    print(f"| {args.side}x{args.side} | {checkpoint.stem} | {int(rss.group(1)) / 1024**2:.2f} GiB | {wall.group(1)} |")


if __name__ == "__main__":
    main()
