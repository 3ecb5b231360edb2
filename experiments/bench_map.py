"""Benchmark (not a test): `buildings map` throughput, the in-process engine against Ray Data with 1
and 2 model actors, on the same GeoTIFFs and model.

The rasters: barnarp's test area as 4 x 4 GeoTIFFs (experiments/map_barnarp.py writes them) when
``--tiles`` names them, else synthetic scenes the project makes (``buildings.data.synth``: 2048 x 2048
px each, ``--files`` of them) in EPSG:32633. The model: ``--checkpoint``, or a U-Net (filters 16,
random weights: the speed does not depend on them). For each engine, one `buildings map` run into a
fresh folder; from its summary.json: the prediction time (engine start, model load in each actor,
every window, the writers), megapixels/s, images (files)/s, peak resident memory per worker; and the
whole command's wall time. The engine's overhead at 1 actor is its prediction time over the
in-process engine's, minus 1.

    python experiments/bench_map.py [--tiles DIR] [--checkpoint M] [--engines local,ray1,ray2] [--block 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def synthetic_tiles(folder: Path, files: int, side: int = 2048) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    from buildings.data.synth import synth_scene

    folder.mkdir(parents=True, exist_ok=True)
    for n in range(files):
        image, _ = synth_scene(np.random.default_rng(n), side, p_empty=0.0)
        transform = from_origin(500_000 + n * side * 0.3, 5_000_000, 0.3, 0.3)
        with rasterio.open(folder / f"synth_{n}.tif", "w", driver="GTiff", height=side, width=side, count=3,
                           dtype="uint8", crs="EPSG:32633", transform=transform, tiled=True) as out:
            out.write(np.moveaxis(image[..., ::-1], -1, 0))  # synth_scene draws BGR
    return folder


def random_unet(path: Path) -> Path:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from buildings.models import build_model

    build_model("unet", filters=16).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=Path, default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--engines", default="local,ray1,ray2")
    parser.add_argument("--block", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tiles = args.tiles or synthetic_tiles(scratch / "tiles", args.files)
        checkpoint = args.checkpoint or str(random_unet(scratch / "unet16.keras"))
        rows = []
        for engine in args.engines.split(","):
            out = scratch / f"out-{engine}"
            kind = "local" if engine == "local" else "ray"
            command = [sys.executable, "-m", "buildings", "map", str(tiles), "--checkpoint", checkpoint, "--out",
                       str(out), "--engine", kind, "--block", str(args.block)]
            if kind == "ray":
                command += ["--actors", engine[3:] or "1"]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True,
                                  env={**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""})
            wall = time.perf_counter() - started
            if done.returncode != 0:
                print(f"{engine}: FAILED\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            summary = json.loads((out / "summary.json").read_text())
            rows.append({**summary, "engine": engine, "wall_s": wall})
    local = next((r for r in rows if r["engine"] == "local"), None)
    print(f"{rows[0]['files'] if rows else 0} files, {rows[0]['windows'] if rows else 0} windows of {args.block} px, "
          f"{os.cpu_count()} CPUs, checkpoint {'given' if args.checkpoint else 'U-Net filters 16 (random)'}")
    # The first window's arrival includes the engine's start (Ray, each actor's Keras and model) but also
    # Ray Data's buffering of results, so it is shown, not subtracted.
    print("| engine | predict s | first window s | megapixels/s | images/s | vs local | peak RSS per worker MB | "
          "command wall s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        ratio = f"{r['predict_seconds'] / local['predict_seconds']:.2f}x" if local else "n/a"
        print(f"| {r['engine']} | {r['predict_seconds']:.1f} | {r['first_window_seconds']:.1f} | "
              f"{r['megapixels_per_s']:.3f} | {r['images_per_s']:.3f} | {ratio} | "
              f"{', '.join(f'{m:.0f}' for m in r['peak_rss_mb_per_worker'])} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
