"""Benchmark (not a test): peak memory of the package's U-Net in Keras on torch against the same
network in plain PyTorch (``native_torch_unet.NativeUNet``, channels_last), for

* inference (``predict_on_batch``; PyTorch under ``torch.no_grad``),
* validation (Keras ``test_on_batch`` with the package's loss and metrics; PyTorch forward + loss
  under ``no_grad``),
* a training step (Keras ``train_on_batch``; PyTorch forward, backward, AdamW step),

each in a fresh process, with the package's graph-memory patch (``buildings.runtime.graph_memory``)
on and off. Memory is the peak GPU memory allocated on a GPU, else the growth of the process's
peak resident memory over what it held after building the model and one warm-up call at 64²
(so the figure is the cost of the call, not of importing the frameworks).

    python experiments/bench_memory.py --filters 32 --batch 4 --size 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, os, resource, sys
sys.path.insert(0, ROOT); sys.path.insert(0, HERE)
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, torch
spec = json.loads(sys.argv[1])
cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
rng = np.random.default_rng(0)
B, S = spec["batch"], spec["size"]
x = rng.normal(size=(B, S, S, 3)).astype("float32")
y = (rng.random((B, S, S, 1)) < 0.1).astype("float32")

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def measure(call, warm):
    warm()
    if cuda:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        base = rss_mb()
    call()
    if cuda:
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return rss_mb() - base

if spec["impl"] == "keras":
    import keras, buildings
    from buildings.losses import get_loss
    from buildings.models import build_model
    from buildings.runtime import graph_memory, torch_speedups
    from buildings.task import Task
    torch_speedups.install()
    if spec["free"]:
        assert graph_memory.install()
    model = build_model("unet", filters=spec["filters"], depth=4)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), metrics=Task(1).metrics())
    small = (x[:1, :64, :64], y[:1, :64, :64])
    calls = {
        "inference": (lambda: model.predict_on_batch(x), lambda: model.predict_on_batch(small[0])),
        "validation": (lambda: model.test_on_batch(x, y), lambda: model.test_on_batch(*small)),
        "training": (lambda: model.train_on_batch(x, y), lambda: model.train_on_batch(*small)),
    }
else:
    from native_torch_unet import NativeUNet, bce_dice
    model = NativeUNet(spec["filters"], 4).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    def tensors(a, b):
        return (torch.tensor(a, device=device).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last),
                torch.tensor(b, device=device).permute(0, 3, 1, 2))
    def infer(a):
        with torch.no_grad():
            model.eval(); return model(tensors(a, y[: len(a), : a.shape[1], : a.shape[2]])[0]).cpu()
    def validate(a, b):
        with torch.no_grad():
            model.eval(); xa, ya = tensors(a, b); return float(bce_dice(model(xa), ya))
    def train(a, b):
        model.train(); xa, ya = tensors(a, b); optimizer.zero_grad(); loss = bce_dice(model(xa), ya)
        loss.backward(); optimizer.step(); return float(loss)
    small = (x[:1, :64, :64], y[:1, :64, :64])
    calls = {
        "inference": (lambda: infer(x), lambda: infer(small[0])),
        "validation": (lambda: validate(x, y), lambda: validate(*small)),
        "training": (lambda: train(x, y), lambda: train(*small)),
    }
call, warm = calls[spec["call"]]
print("RESULT", json.dumps({**spec, "peak_mb": measure(call, warm), "device": device}))
"""


def run(spec: dict) -> dict:
    code = CHILD.replace("ROOT", repr(str(HERE.parent))).replace("HERE", repr(str(HERE)))
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.split("RESULT", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--calls", default="inference,validation,training")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for call in args.calls.split(","):
        base = {"filters": args.filters, "batch": args.batch, "size": args.size, "call": call}
        native = run({**base, "impl": "torch", "free": False})
        before = run({**base, "impl": "keras", "free": False})
        after = run({**base, "impl": "keras", "free": True})
        rows.append({"call": call, "torch_mb": native["peak_mb"], "keras_mb": before["peak_mb"],
                     "keras_free_mb": after["peak_mb"], "device": native["device"]})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nU-Net filters {args.filters}, batch {args.batch}, {args.size}x{args.size}; peak MB "
          f"({'GPU allocated' if rows[0]['device'] == 'cuda' else 'resident growth'})")
    print("| call | plain PyTorch | Keras as released | Keras, intermediates freed | ratio before | ratio after |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['call']} | {r['torch_mb']:.0f} | {r['keras_mb']:.0f} | {r['keras_free_mb']:.0f} | "
              f"{r['keras_mb'] / r['torch_mb']:.2f}x | {r['keras_free_mb'] / r['torch_mb']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
