"""``buildings bench``: the same training steps and inference under each installed backend.

Each backend runs in a fresh subprocess (Keras fixes its backend at import). All start from the
same initial weights (built once, saved, loaded by each) and train on the same fixed batches, so
the loss after N steps says whether the backends agree numerically, and the timings compare
like with like.

``torch-plain`` is a further choice of backend: torch with the package's Keras patches off
(``buildings.runtime``: Keras as released), to show what they do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from buildings.errors import ConfigError

__all__ = ["BACKENDS", "run_bench", "bench_current_backend"]

BACKENDS = ("torch", "jax", "tensorflow")
PLAIN_TORCH = "torch-plain"  # torch without buildings.runtime.torch_speedups


def installed_backends() -> list[str]:
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def _module(backend: str) -> str:
    return "torch" if backend == PLAIN_TORCH else backend


def _batches(n_steps: int, batch_size: int, image_size: int, seed: int = 0):
    """Fixed synthetic scenes (normalised images, masks): the same on every backend."""
    import numpy as np

    from buildings.data.synth import synth_scene
    from buildings.preprocessing import normalise

    rng = np.random.default_rng(seed)
    scenes = [synth_scene(rng, image_size, p_empty=0.0) for _ in range(batch_size * 2)]
    images = normalise(np.stack([s[0][..., ::-1] for s in scenes]))  # BGR -> RGB
    masks = np.stack([s[1] for s in scenes])[..., None].astype("float32")
    return [(images[(i % 2) * batch_size:(i % 2 + 1) * batch_size],
             masks[(i % 2) * batch_size:(i % 2 + 1) * batch_size]) for i in range(n_steps)]


def _peak_memory_mb() -> tuple[float, str]:
    """Peak accelerator memory when computing on one, else the process's peak resident memory."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated() / 2**20, "gpu"
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":
                return device.memory_stats()["peak_bytes_in_use"] / 2**20, "gpu"
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, "gpu"
    except Exception:  # pragma: no cover - informational
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss"


def bench_current_backend(spec: dict) -> dict:
    """Run the benchmark described by ``spec`` on the active backend; returns one table row."""
    import time

    import keras
    import numpy as np

    from buildings.config import PRECISIONS
    from buildings.losses import get_loss
    from buildings.models import build_model
    from buildings.runtime import install_patches, torch_speedups
    from buildings.runtime.device import describe_device

    install_patches()  # none for torch-plain (BUILDINGS_TORCH_SPEEDUPS=0, BUILDINGS_FREE_INTERMEDIATES=0)
    keras.mixed_precision.set_global_policy(PRECISIONS[spec["precision"]])
    model = build_model(spec["model"], **spec["model_options"])
    model.load_weights(spec["weights"])
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"),
                  jit_compile=spec.get("jit_compile", "auto"))
    batches = _batches(spec["steps"] + 1, spec["batch_size"], spec["image_size"])
    start = time.perf_counter()
    model.train_on_batch(*batches[0])
    first = time.perf_counter() - start
    times, losses = [], []
    for x, y in batches[1:]:
        start = time.perf_counter()
        loss = model.train_on_batch(x, y)
        losses.append(float(np.asarray(loss if np.ndim(loss) == 0 else loss[0])))
        times.append(time.perf_counter() - start)
    x = batches[0][0]
    model.predict_on_batch(x)
    infer = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        out = model.predict_on_batch(x)
        np.asarray(out)
        infer.append(time.perf_counter() - start)
    memory, kind = _peak_memory_mb()
    p50, p90 = float(np.percentile(times, 50)), float(np.percentile(times, 90))
    backend = keras.backend.backend()
    if backend == "torch" and not any(torch_speedups.installed().values()):
        backend = PLAIN_TORCH
    return {"backend": backend, "device": describe_device(),
            "train_images_per_s": spec["batch_size"] / p50, "step_p50_s": p50, "step_p90_s": p90,
            "first_step_s": first, "infer_images_per_s": spec["batch_size"] / float(np.median(infer)),
            "peak_memory_mb": memory, "memory_kind": kind, "loss_first": losses[0], "loss_last": losses[-1]}


def run_bench(model: str = "unet", *, image_size: int = 256, batch_size: int = 4, steps: int = 10,
              precision: str = "fp32", model_options: dict | None = None, backends=None,
              jit_compile="auto") -> list[dict]:
    """Benchmark ``model`` under each backend in fresh subprocesses (``torch-plain``: torch with
    the speed-ups off); returns the rows."""
    model_options = dict(model_options or {})
    backends = list(backends or installed_backends())
    unknown = [b for b in backends if b not in (*BACKENDS, PLAIN_TORCH)]
    if unknown:
        raise ConfigError(f"unknown backend(s) {unknown}: choose from {', '.join((*BACKENDS, PLAIN_TORCH))}")
    missing = [b for b in backends if _module(b) not in installed_backends()]
    if missing:
        raise ConfigError(f"backend(s) not installed: {missing}")
    with tempfile.TemporaryDirectory(prefix="buildings-bench-") as tmp:
        weights = Path(tmp) / "initial.weights.h5"
        spec = {"model": model, "model_options": model_options, "image_size": image_size,
                "batch_size": batch_size, "steps": steps, "precision": precision, "weights": str(weights),
                "jit_compile": jit_compile}
        _run_child("torch" if "torch" in installed_backends() else backends[0],
                   f"import keras, buildings\nfrom buildings.models import build_model\n"
                   f"keras.utils.set_random_seed(0)\n"
                   f"build_model({model!r}, **{model_options!r}).save_weights({str(weights)!r})")
        rows = []
        for backend in backends:
            out = _run_child(backend, "import json, sys, buildings\nfrom buildings.benchmark import "
                                      "bench_current_backend\nprint('ROW', json.dumps(bench_current_backend("
                                      f"json.loads({json.dumps(json.dumps(spec))}))))")
            rows.append(json.loads(out.split("ROW", 1)[1]))
        return rows


def _run_child(backend: str, code: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": _module(backend), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == PLAIN_TORCH:
        env["BUILDINGS_TORCH_SPEEDUPS"] = "0"
        env["BUILDINGS_FREE_INTERMEDIATES"] = "0"
    if backend == "jax":
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if backend == "tensorflow":
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{backend} benchmark failed:\n{result.stderr[-3000:]}")
    return result.stdout


def model_flops(model_name: str, height: int, width: int, **options) -> float:
    """Multiply-add FLOPs (2 per multiply-accumulate) of one forward pass of one ``height`` x
    ``width`` image through the convolutions and dense layers of ``model_name`` (normalisation,
    activations and resizing are left out: a few per cent of a U-Net's). A training step costs
    about three times this (forward, and backward for activations and weights)."""
    import keras

    from buildings.models import build_model

    def count(model, shape) -> float:
        total = 0.0
        for layer in model.layers:
            if isinstance(layer, keras.Model):  # a backbone: it sees the whole (adapted) image
                total += count(layer, shape)
        layers = [layer for layer in model.layers if not isinstance(layer, (keras.layers.InputLayer, keras.Model))]
        probe = keras.Model(model.inputs, [layer.output for layer in layers])
        specs = probe.compute_output_spec(keras.KerasTensor(shape))
        for layer, spec in zip(layers, specs, strict=True):
            out = spec.shape
            if len(out) != 4 or not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                                       keras.layers.SeparableConv2D, keras.layers.Dense)):
                continue
            spatial, channels_in = float(out[1] * out[2]), layer.input.shape[-1]
            if isinstance(layer, keras.layers.SeparableConv2D):
                kh, kw = layer.kernel_size
                total += 2 * spatial * channels_in * (kh * kw * layer.depth_multiplier + layer.filters)
            elif isinstance(layer, keras.layers.DepthwiseConv2D):
                kh, kw = layer.kernel_size
                total += 2 * spatial * channels_in * layer.depth_multiplier * kh * kw
            elif isinstance(layer, keras.layers.Conv2D):
                kh, kw = layer.kernel_size
                total += 2 * spatial * out[-1] * kh * kw * channels_in / layer.groups
            elif isinstance(layer, keras.layers.Dense):
                total += 2 * spatial * channels_in * out[-1]
        return total

    return count(build_model(model_name, **options), (1, height, width, 3))
