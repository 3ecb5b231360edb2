"""The same model / loss / metric tests under jax and tensorflow, and a checkpoint trained under
torch loaded under the others. Each backend runs in a fresh subprocess (Keras fixes its backend at
import). Skipped, with the reason, when a backend is not installed."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

SCRIPTS = ROOT / "tests" / "scripts"
BACKEND_MODULE = {"jax": "jax", "tensorflow": "tensorflow"}


def run_under(backend: str, args: list[str], timeout=1200) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(BACKEND_MODULE.get(backend, backend)) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[jax,tf]')")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


# The suites re-run under each backend, one process per file (so that a parallel run spreads them).
BACKEND_SUITES = ["tests/models/test_models.py", "tests/test_losses_metrics.py", "tests/data/test_augment.py",
                  "tests/inference/test_probability_model.py"]


@pytest.mark.slow
@pytest.mark.parametrize("suite", BACKEND_SUITES)
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_model_loss_metric_suite_passes_on(backend, suite):
    result = run_under(backend, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", suite])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.splitlines()[-1]





CHECKPOINTS = [
    ("attunet", '{"filters": 8, "depth": 3, "decoder_attention": "cbam"}'),
    ("deeplabv3plus", '{"decoder_attention": "se"}'),
]


@pytest.fixture(scope="module")
def torch_checkpoints(tmp_path_factory) -> dict:
    """Every model of CHECKPOINTS trained under torch and loaded under jax and tensorflow: one
    process per backend for all of them (each start imports a framework: ~10-20 s), each model in
    its own folder with its own seed, so that one model's failure is reported by its own test.
    {name: (torch process, its folder, {backend: (process, {folder: max difference or traceback})})}."""
    folders = {name: tmp_path_factory.mktemp(name) for name, _ in CHECKPOINTS}
    trained = run_under("torch", [str(SCRIPTS / "backend_train.py"),
                                  *(arg for name, options in CHECKPOINTS for arg in (str(folders[name]), name, options))])
    loaded = {}
    for backend in ("jax", "tensorflow"):
        done = run_under(backend, [str(SCRIPTS / "backend_load.py"), *(str(folders[name]) for name, _ in CHECKPOINTS)])
        results = json.loads(done.stdout.split("RESULTS", 1)[1]) if "RESULTS" in done.stdout else {}
        loaded[backend] = (done, results)
    return {name: (trained, folders[name], loaded) for name, _ in CHECKPOINTS}


@pytest.mark.slow
@pytest.mark.parametrize("name, options", CHECKPOINTS)
def test_checkpoint_trained_under_torch_loads_under_jax_and_tensorflow(torch_checkpoints, name, options):
    trained, folder, loaded = torch_checkpoints[name]
    error = folder / "error.txt"
    assert not error.exists() and (folder / "model.keras").is_file(), (error.read_text() if error.exists()
                                                                      else trained.stderr[-3000:])
    for backend in ("jax", "tensorflow"):
        done, results = loaded[backend]
        diff = results.get(str(folder))
        assert isinstance(diff, float), (backend, diff if diff is not None else done.stderr[-3000:])
        assert np.isfinite(diff) and diff < 1e-5, (backend, diff)




@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax", "tensorflow"])
def test_every_model_trains_one_short_epoch_on(backend, synth_dataset, tmp_path):
    result = run_under(backend, [str(SCRIPTS / "backend_fit_each.py"), str(synth_dataset), str(tmp_path)])
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads(result.stdout.split("RESULTS", 1)[1])
    assert set(results) == {"unet", "attunet", "deeplabv3plus", "fcn"}
    for name, row in results.items():
        assert row["epochs"] == 1, name
        history = (tmp_path / f"{backend}-{name}" / "history.csv").read_text().splitlines()
        column = history[0].split(",").index("val_contest_dice")  # a validation contest Dice was computed
        assert float(history[1].split(",")[column]) == pytest.approx(row["best"]), name
        stored = json.loads((tmp_path / f"{backend}-{name}" / "config.json").read_text())
        assert stored["backend"] == backend
