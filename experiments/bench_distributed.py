"""Benchmark (not a test): data-parallel training throughput, 1 process vs N (torch.distributed).

For each process count, starts ``torchrun --standalone --nproc-per-node N`` on this file's worker
mode, which trains the package's U-Net through ``buildings.training`` (TrainingModel, the run's
objective, ``Replicas.prepare``: the DDP wrapper) on in-memory uint8 batches (no loader: the figure
is the step's), and measures, after warm-up steps:

* global images/s (``N x --batch-size`` images a step) and the scaling against 1 process;
* the communication share of a step: the same steps under DDP's ``no_sync()`` (no gradient
  all-reduce) are timed too, and ``1 - t_no_sync / t_sync`` is the share the all-reduce adds
  (what backward did not hide);
* peak resident memory per process.

On a CPU each process gets ``cores / N`` intra-op threads (torch's default would oversubscribe). On
GPUs (``--device cuda``) each rank takes its own GPU and NCCL; ``--processes 1,2,4,8`` up to the
GPUs visible. Prints markdown (and ``--json`` rows).

    python experiments/bench_distributed.py [--processes 1,2] [--image-size 128] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    """One rank (under torchrun): time ``--steps`` training steps with and without the all-reduce."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    import keras
    import numpy as np

    from buildings.config import FitConfig
    from buildings.models import build_model
    from buildings.runtime import install_patches
    from buildings.task import Task
    from buildings.training.distributed import replicas_for, start
    from buildings.training.objective import TrainingObjective
    from buildings.training.training_model import TrainingModel

    install_patches()
    replicas = start(replicas_for(None, "torch"))
    keras.utils.set_random_seed(0)
    model = build_model("unet", filters=args.filters)
    trainer = TrainingModel(model)
    config = FitConfig(epochs=1, batch_size=args.batch_size, warmup_epochs=0, loss="bce_dice", num_classes=1,
                       class_weights=None)
    TrainingObjective(config, Task(1), args.steps).compile(trainer)
    rng = np.random.default_rng(replicas.rank)
    size = args.image_size
    images = rng.integers(0, 256, (args.batch_size, size, size, 3), dtype=np.uint8)
    masks = (rng.random((args.batch_size, size, size, 1)) < 0.3).astype(np.uint8)
    trainer.train_on_batch({"image": images}, masks)  # builds the optimizer before the broadcast
    replicas.prepare(trainer)

    def timed(steps: int, sync: bool) -> float:
        from contextlib import nullcontext

        ddp = trainer._replicated
        context = ddp.no_sync if (ddp is not None and not sync) else nullcontext
        for _ in range(args.warmup):
            with context():
                trainer.train_on_batch({"image": images}, masks)
        _barrier(replicas)
        begin = time.perf_counter()
        for _ in range(steps):
            with context():
                trainer.train_on_batch({"image": images}, masks)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        _barrier(replicas)
        return (time.perf_counter() - begin) / steps

    synced = timed(args.steps, True)
    unsynced = timed(args.steps, False) if replicas.distributed else synced
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if replicas.chief:
        row = {"processes": replicas.processes, "step_s": synced, "step_no_sync_s": unsynced,
               "images_per_s": replicas.global_batch(args.batch_size) / synced,
               "communication_share": max(0.0, 1 - unsynced / synced) if replicas.distributed else 0.0,
               "peak_rss_mb_rank0": peak_mb,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
               "threads_per_process": torch.get_num_threads()}
        Path(args.out).write_text(json.dumps(row))
    replicas.close()


def _barrier(replicas) -> None:
    if replicas.distributed:
        import torch.distributed as dist

        dist.barrier()


def drive(args) -> list[dict]:
    rows = []
    for count in [int(n) for n in args.processes.split(",")]:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "row.json"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(count), __file__, "--worker",
                       "--out", str(out), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--filters", str(args.filters)]
            env = {**os.environ, "KERAS_BACKEND": "torch"}
            if args.device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = ""
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f"{count} processes FAILED:\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.read_text()))
    base = next((r["images_per_s"] for r in rows if r["processes"] == 1), None)
    for row in rows:
        row["scaling"] = row["images_per_s"] / base if base else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4, help="per process")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = drive(args)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"U-Net filters {args.filters}, {args.image_size}² crops, batch {args.batch_size} per process, "
          f"{args.steps} timed steps after {args.warmup}, {args.device}, {os.cpu_count()} cores")
    print("| processes | threads each | global images/s | scaling | step s | step without all-reduce s | "
          "communication share | peak RSS rank 0 MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['processes']} | {r['threads_per_process']} | {r['images_per_s']:.2f} | {r['scaling']:.2f} | "
              f"{r['step_s']:.3f} | {r['step_no_sync_s']:.3f} | {r['communication_share']:.1%} | "
              f"{r['peak_rss_mb_rank0']:.0f} |")


if __name__ == "__main__":
    main()
