"""Benchmark (not a test): parameter count and forward time at 512x512 of each model under each
installed backend, plus a checkpoint trained under torch and loaded under the others.

Run:  python experiments/bench_models.py [--size 512] [--repeat 3] [--models unet,attunet,...]

Each backend runs in a fresh subprocess (Keras fixes its backend at import). Forward time is the
median of --repeat calls of ``model.predict_on_batch`` on one image after one warm-up call (the
compiled path: jit for jax / tensorflow, eager for torch). Default model options throughout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, os, platform, statistics, sys, time
    import numpy as np, keras
    sys.path.insert(0, os.environ["BUILDINGS_ROOT"])
    import buildings
    from buildings.models import build_model
    size, repeat = int(sys.argv[1]), int(sys.argv[2])
    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype("float32")
    for name in sys.argv[3].split(","):
        model = build_model(name)
        model.predict_on_batch(x)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model.predict_on_batch(x)
            times.append(time.perf_counter() - start)
        print(json.dumps({"model": name, "params": model.count_params(),
                          "seconds": statistics.median(times)}), flush=True)
""")

TRAIN = textwrap.dedent("""
    import os, sys, numpy as np, keras
    sys.path.insert(0, os.environ["BUILDINGS_ROOT"])
    import buildings
    from buildings.models import build_model
    from buildings.losses import get_loss
    keras.utils.set_random_seed(0)
    model = build_model(sys.argv[2])
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 128, 128, 3)).astype("float32")
    y = (rng.random((2, 128, 128, 1)) < 0.3).astype("float32")
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    model.save(sys.argv[1] + "/model.keras")
    np.savez(sys.argv[1] + "/io.npz", x=x, y=keras.ops.convert_to_numpy(model(x, training=False)))
""")

LOAD = textwrap.dedent("""
    import os, sys, numpy as np, keras
    sys.path.insert(0, os.environ["BUILDINGS_ROOT"])
    import buildings
    from buildings.models import load_model
    data = np.load(sys.argv[1] + "/io.npz")
    out = keras.ops.convert_to_numpy(load_model(sys.argv[1] + "/model.keras")(data["x"], training=False))
    print(float(np.abs(out - data["y"]).max()))
""")


def run(backend, code, *args):
    env = {**os.environ, "KERAS_BACKEND": backend, "BUILDINGS_ROOT": str(ROOT), "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{backend}: {out.stderr[-2000:]}")
    return out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", default="unet,attunet,deeplabv3plus,fcn")
    args = parser.parse_args()
    backends = [b for b, m in (("torch", "torch"), ("jax", "jax"), ("tensorflow", "tensorflow"))
                if importlib.util.find_spec(m)]
    table: dict[str, dict] = {}
    for backend in backends:
        for line in run(backend, CHILD, str(args.size), str(args.repeat), args.models).splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                table.setdefault(row["model"], {"params": row["params"]})[backend] = row["seconds"]
    print(f"forward pass, 1 image {args.size}x{args.size}, CPU ({os.cpu_count()} cores), median of {args.repeat}")
    print("| model | parameters | " + " | ".join(f"{b} s" for b in backends) + " |")
    print("|---|---:|" + "---:|" * len(backends))
    for name, row in table.items():
        print(f"| {name} | {row['params']:,} | " + " | ".join(f"{row[b]:.2f}" for b in backends) + " |")
    print("\ncheckpoint trained (1 step) under torch, loaded elsewhere: max |difference| of logits")
    for name in ("attunet", "deeplabv3plus"):
        with tempfile.TemporaryDirectory() as tmp:
            run("torch", TRAIN, tmp, name)
            diffs = {b: float(run(b, LOAD, tmp).strip().splitlines()[-1]) for b in backends}
        print(f"{name}: " + ", ".join(f"{b} {d:.2e}" for b, d in diffs.items()))


if __name__ == "__main__":
    main()
