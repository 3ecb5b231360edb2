"""Benchmark (not a test): is training input-bound? For a model and image size, with augmentation in
the CPU workers (albumentations) and on the device (keras.ops inside the step):

1. **loader**: images/s the data workers deliver (read, decode, crop, and augment on the CPU path),
   with 1, 2, 4, ... worker threads (Keras's PyDataset runs the same __getitem__ in its pool);
2. **step**: images/s of the training step alone, on batches already on the device (uint8, with
   the augmentation parameters on the device path), so data loading costs nothing;
3. **fit**: a real ``model.fit`` of a few steps with the loader, and the share of its wall time the
   step waited for data (time from one batch's end to the next one's start, over the total).

    python experiments/bench_input_bound.py --data DATASET --model unet --model-option filters=64 \\
        --image-size 512 --batch-size 8 --workers 1,2,4,8

Prints one Markdown table (and ``--json`` writes the rows). Runs on the GPU when the backend sees one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from buildings.config import PRECISIONS, parse_model_options  # noqa: E402
from buildings.data.pipeline import SegmentationBatches  # noqa: E402
from buildings.data.splits import open_split  # noqa: E402
from buildings.losses import get_loss  # noqa: E402
from buildings.models import build_model  # noqa: E402
from buildings.runtime import install_patches  # noqa: E402
from buildings.runtime.device import accelerator_available, describe_device  # noqa: E402
from buildings.task import Task  # noqa: E402
from buildings.training.training_model import TrainingModel  # noqa: E402


def synchronize() -> None:
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def loader_rate(source, args, augment_on: str, workers: int) -> float:
    """Images/s of __getitem__ over ``workers`` threads (PyDataset's thread pool does the same)."""
    batches = SegmentationBatches(source, args.batch_size, image_size=args.image_size, augment=args.aug,
                                  training=True, seed=0, cutmix=args.cutmix, augment_on=augment_on)
    n = min(len(batches), args.loader_batches)
    batches[0]  # warm-up: thread-local pipelines, OpenCV
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(batches.__getitem__, range(n)):
            pass
    return n * args.batch_size / (time.perf_counter() - start)


def training_model(args):
    keras.utils.set_random_seed(0)
    trainer = TrainingModel(build_model(args.model, **parse_model_options(args.model_option)))
    trainer.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), metrics=Task(1).metrics(),
                    jit_compile=args.jit_compile)
    return trainer


def step_rate(source, args, augment_on: str) -> float:
    """Images/s of train_on_batch on one batch already on the device."""
    batches = SegmentationBatches(source, args.batch_size, image_size=args.image_size, augment=args.aug,
                                  training=True, seed=0, cutmix=args.cutmix, augment_on=augment_on)
    inputs, masks = batches[0]
    inputs = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    masks = keras.ops.convert_to_tensor(masks)
    trainer = training_model(args)
    for _ in range(2):  # warm-up (and compilation)
        trainer.train_on_batch(inputs, masks)
    synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_on_batch(inputs, masks)
    synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


class WaitTimer(keras.callbacks.Callback):
    """Time between one batch's end and the next one's start (the step waiting for data)."""

    def __init__(self):
        super().__init__()
        self.wait = self.busy = 0.0
        self.mark = None

    def on_epoch_begin(self, epoch, logs=None):
        self.mark = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        now = time.perf_counter()
        if batch > 0:  # the first batch's wait is the pool starting, not steady state
            self.wait += now - self.mark
        self.mark = now

    def on_train_batch_end(self, batch, logs=None):
        synchronize()
        now = time.perf_counter()
        if batch > 0:
            self.busy += now - self.mark
        self.mark = now


def fit_wait_share(source, args, augment_on: str, workers: int) -> tuple[float, float]:
    """(share of the fit's batch time spent waiting for data, images/s) over ``args.fit_steps`` steps."""
    batches = SegmentationBatches(source, args.batch_size, image_size=args.image_size, augment=args.aug,
                                  training=True, seed=0, cutmix=args.cutmix, augment_on=augment_on, workers=workers,
                                  max_queue_size=2 * workers + 2)
    trainer = training_model(args)
    timer = WaitTimer()
    steps = min(len(batches), args.fit_steps)
    trainer.fit(batches, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    total = timer.wait + timer.busy
    return timer.wait / total, (steps - 1) * args.batch_size / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="built dataset (name or folder)")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--aug", default="strong")
    parser.add_argument("--cutmix", type=float, default=0.2)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--fit-workers", type=int, default=None, help="workers of the fit (default: the most)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the step-only measurement")
    parser.add_argument("--fit-steps", type=int, default=12)
    parser.add_argument("--loader-batches", type=int, default=16)
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    parser.add_argument("--jit-compile", default="auto")
    parser.add_argument("--modes", default="cpu,device")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.jit_compile = {"true": True, "false": False}.get(args.jit_compile, "auto")
    install_patches()
    keras.mixed_precision.set_global_policy(PRECISIONS[args.precision])
    source = open_split(args.data, "train")
    workers = [int(w) for w in args.workers.split(",")]
    fit_workers = args.fit_workers or max(workers)
    print(f"{args.model} {args.model_option} {args.image_size}x{args.image_size}, batch {args.batch_size}, aug "
          f"{args.aug} + cutmix {args.cutmix}, {args.precision}; {keras.backend.backend()} on {describe_device()} "
          f"(accelerator: {accelerator_available()}); {os.cpu_count()} CPUs; keras {keras.__version__}", flush=True)
    rows = []
    for mode in args.modes.split(","):
        row = {"augment_on": mode}
        for w in workers:
            row[f"loader_{w}"] = loader_rate(source, args, mode, w)
        row["step"] = step_rate(source, args, mode)
        row["fit_wait_share"], row["fit_images_per_s"] = fit_wait_share(source, args, mode, fit_workers)
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = " | ".join(f"loader {w} worker{'s' if w > 1 else ''}" for w in workers)
    print(f"\n| augmentation | {header} | step alone | fit ({fit_workers} workers) | waiting for data |")
    print("|---|" + "---:|" * (len(workers) + 3))
    for row in rows:
        cells = " | ".join(f"{row[f'loader_{w}']:.1f}" for w in workers)
        print(f"| {row['augment_on']} | {cells} | {row['step']:.1f} | {row['fit_images_per_s']:.1f} | "
              f"{100 * row['fit_wait_share']:.1f}% |")
    print("(images/s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
