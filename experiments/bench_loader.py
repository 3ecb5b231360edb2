"""Benchmark (not a test): decoded + augmented images/s of the input pipeline at 512x512.

Run:  python experiments/bench_loader.py [--data DIR_OR_NAME] [--augment strong] [--batches 20]

Without --data it builds ../shared/data/barnarp (or, if absent, 64 synthetic tiles) into a
temporary TFDS data_dir first. Prints images/s for one worker (one thread doing decode + augment +
normalise in the calling process) and for N worker threads / processes through Keras's PyDataset
machinery, plus images/s per worker.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import albumentations  # noqa: E402
import cv2  # noqa: E402
import keras  # noqa: E402

from buildings.data.pipeline import SegmentationBatches  # noqa: E402
from buildings.data.splits import open_split  # noqa: E402
from buildings.data.tfds.tianchi_buildings import build_dataset  # noqa: E402


def time_direct(batches: SegmentationBatches, n_batches: int) -> float:
    batches[0]  # warm up (first decode, thread-local pipeline)
    start = time.perf_counter()
    for i in range(n_batches):
        batches[i % len(batches)]
    return n_batches * batches.batch_size / (time.perf_counter() - start)


def time_workers(batches: SegmentationBatches, n_batches: int) -> float:
    """images/s through the PyDataset enqueuer Keras's fit uses."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(batches, shuffle=False)
    adapter.on_epoch_begin()
    iterator = adapter.get_numpy_iterator()
    next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(n_batches - 1):
        try:
            next(iterator)
        except StopIteration:
            break
        count += 1
    elapsed = time.perf_counter() - start
    adapter.on_epoch_end()
    return count * batches.batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--augment", default="strong")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    data = args.data
    if data is None:
        barnarp = Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp"
        tmp = Path(tempfile.mkdtemp(prefix="bench_loader_"))
        if not barnarp.is_dir():
            from buildings.data.synth import write_synthetic_contest
            barnarp = write_synthetic_contest(tmp / "synth", 64)["train.zip"].parent
        data = build_dataset(barnarp, tmp / "tfds", config="val10")
    source = open_split(data, "train")
    print(f"{source.name} train: {len(source)} images at 512x512, augment={args.augment}, "
          f"batch {args.batch_size}; {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"opencv {cv2.__version__}, albumentations {albumentations.__version__}, keras {keras.__version__}")

    def make(workers=1, multiprocessing=False):
        return SegmentationBatches(source, args.batch_size, augment=args.augment, training=True, seed=0,
                                   workers=workers, use_multiprocessing=multiprocessing)

    one = time_direct(make(), args.batches)
    print(f"1 worker (in process)        {one:7.1f} images/s")
    for multiprocessing in (False, True):
        kind = "processes" if multiprocessing else "threads"
        rate = time_workers(make(args.workers, multiprocessing), args.batches)
        print(f"{args.workers} worker {kind:<10}        {rate:7.1f} images/s  ({rate / args.workers:.1f} per worker)")


if __name__ == "__main__":
    main()
