"""Benchmark (not a test): inference images/s at 512x512 through ``buildings.inference.Predictor``
(normalise, ``predict_on_batch``, sigmoid, TTA undo and average), with and without test-time
augmentation, on the active backend; on torch also with the package's torch speed-ups off.

Run:  python experiments/bench_inference.py [--model unet] [--model-option filters=16] [--images 16]
          [--batch 8] [--checkpoint best.keras] [--precision fp32|bf16]

Random 512x512 RGB images (the speed does not depend on the content); the model is built with
random weights unless --checkpoint is given. Prints one markdown row per (speed-ups, TTA).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from buildings.config import PRECISIONS, parse_model_options  # noqa: E402
from buildings.inference import Predictor, load_checkpoints  # noqa: E402
from buildings.models import build_model  # noqa: E402
from buildings.runtime import torch_speedups  # noqa: E402
from buildings.runtime.device import describe_device  # noqa: E402


def images_per_second(predictor: Predictor, images: list[np.ndarray]) -> float:
    predictor.batch_probabilities(images[:predictor.batch_size])  # warm-up (and compilation)
    start = time.perf_counter()
    predictor.batch_probabilities(images)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(PRECISIONS[args.precision])
    options = parse_model_options(args.model_option)  # the CLI's KEY=VALUE parsing (JSON values)
    if not args.checkpoint:
        options.setdefault("filters", 16)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
    backend = keras.backend.backend()
    print(f"{args.checkpoint or args.model} {options if not args.checkpoint else ''}, {args.images} images "
          f"{args.size}x{args.size}, batch {args.batch}, {args.precision}; {backend} on {describe_device()}; "
          f"keras {keras.__version__}, python {platform.python_version()}")
    print("| backend | torch speed-ups | TTA | forward passes / image | images / s |")
    print("|---|---|---|---:|---:|")
    for speedups in ((True, False) if backend == "torch" else (False,)):
        torch_speedups.uninstall()
        if speedups:
            torch_speedups.install()
        keras.utils.set_random_seed(0)
        models = load_checkpoints([args.checkpoint]) if args.checkpoint else [build_model(args.model, **options)]
        for tta, passes in (("none", 1), ("flip", 3), ("d4", 8)):
            predictor = Predictor(models, tta=tta, batch_size=args.batch)
            if not speedups:
                torch_speedups.uninstall()  # a Predictor installs them, as every entry point does
            rate = images_per_second(predictor, images)
            print(f"| {backend} | {'on' if speedups else 'off'} | {tta} | {passes} | {rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
