"""The same model / loss / metric tests under jax and tensorflow, and a checkpoint trained under
torch loaded under the others. Each backend runs in a fresh subprocess (Keras fixes its backend at
import). Skipped, with the reason, when a backend is not installed."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import ROOT

BACKEND_MODULE = {"jax": "jax", "tensorflow": "tensorflow"}


def run_under(backend: str, args: list[str], timeout=1200) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(BACKEND_MODULE.get(backend, backend)) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[jax,tf]')")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_model_loss_metric_suite_passes_on(backend):
    result = run_under(backend, ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "tests/test_models.py", "tests/test_losses_metrics.py", "tests/test_augment.py",
                                 "tests/test_probability_model.py"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.splitlines()[-1]


TRAIN = textwrap.dedent("""
    import sys, numpy as np, keras, buildings
    from buildings.models import build_model
    from buildings.losses import get_loss
    from buildings.metrics import binary_metrics
    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(0)
    model = build_model(sys.argv[2], num_classes=1, **eval(sys.argv[3]))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), metrics=binary_metrics())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 64, 64, 3)).astype("float32")
    y = (rng.random((4, 64, 64, 1)) < 0.3).astype("float32")
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    model.save(sys.argv[1] + "/model.keras")
    np.savez(sys.argv[1] + "/io.npz", x=x, y=keras.ops.convert_to_numpy(model(x, training=False)))
""")

LOAD = textwrap.dedent("""
    import sys, numpy as np, keras, buildings
    from buildings.models import load_model
    data = np.load(sys.argv[1] + "/io.npz")
    model = load_model(sys.argv[1] + "/model.keras")
    out = keras.ops.convert_to_numpy(model(data["x"], training=False))
    print("MAXDIFF", float(np.abs(out - data["y"]).max()))
""")


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [
    ("attunet", "{'filters': 8, 'depth': 3, 'decoder_attention': 'cbam'}"),
    ("deeplabv3plus", "{'decoder_attention': 'se'}"),
])
def test_checkpoint_trained_under_torch_loads_under_jax_and_tensorflow(tmp_path, name, options):
    trained = run_under("torch", ["-c", TRAIN, str(tmp_path), name, options])
    assert trained.returncode == 0, trained.stderr[-3000:]
    for backend in ("jax", "tensorflow"):
        loaded = run_under(backend, ["-c", LOAD, str(tmp_path)])
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        diff = float(loaded.stdout.split("MAXDIFF")[-1])
        assert np.isfinite(diff) and diff < 1e-5, (backend, diff)


FIT_EACH_MODEL = textwrap.dedent("""
    import json, sys, keras, buildings
    from buildings.training import FitConfig
    from buildings.training import fit
    data, out = sys.argv[1], sys.argv[2]
    small = {"unet": {"filters": 4, "depth": 2}, "attunet": {"filters": 4, "depth": 2},
             "deeplabv3plus": {}, "fcn": {}}
    results = {}
    for name, options in small.items():
        # augmentation on the device (strong, CutMix) inside each backend's training step
        config = FitConfig(model=name, model_options=options, data=data, epochs=1, steps_per_epoch=2,
                           batch_size=2, image_size=64, resize_mode="resize", aug="strong", augment_on="device",
                           cutmix=0.5, verbose=0, run_dir=f"{out}/{keras.backend.backend()}-{name}")
        result = fit(config)
        results[name] = {"epochs": result.epochs_run, "best": result.best_dice}
    print("RESULTS", json.dumps(results))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax", "tensorflow"])
def test_every_model_trains_one_short_epoch_on(backend, synth_dataset, tmp_path):
    result = run_under(backend, ["-c", FIT_EACH_MODEL, str(synth_dataset), str(tmp_path)])
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads(result.stdout.split("RESULTS", 1)[1])
    assert set(results) == {"unet", "attunet", "deeplabv3plus", "fcn"}
    for name, row in results.items():
        assert row["epochs"] == 1, name
        assert 0.0 <= row["best"] <= 1.0, name  # a validation contest Dice was computed
        stored = json.loads((tmp_path / f"{backend}-{name}" / "config.json").read_text())
        assert stored["backend"] == backend
