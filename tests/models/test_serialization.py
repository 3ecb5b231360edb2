"""Keras's own loader knows the package's objects after ``import buildings`` (whichever of Keras and
buildings is imported first), and importing the package or its models stays light. Each check runs
in a fresh interpreter, where nothing else has imported the modules that register them."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

MODELS = {
    "unet": {"filters": 4, "depth": 2},
    "attunet": {"filters": 4, "depth": 2, "decoder_attention": "cbam"},
    "deeplabv3plus": {"decoder_attention": "se"},
    "fcn": {},
}


def python(script: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / script), *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One compiled checkpoint per model (with the package's loss and metrics) and its outputs,
    written by a process that imported everything through buildings."""
    folder = tmp_path_factory.mktemp("checkpoints")
    result = python("serialization_save.py", folder, json.dumps(MODELS))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("order", ["buildings-first", "keras-first"])
def test_keras_load_model_loads_every_model_after_import_buildings(checkpoints, order):
    result = python("serialization_load.py", order, checkpoints, *MODELS)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] and line.split()[0] in MODELS]
    assert [r[0] for r in rows] == list(MODELS)
    for name, loss, diff in rows:
        assert loss == "BCEDiceLoss", name  # compiled with the package's loss, restored as such
        assert float(diff) < 1e-5, name


def test_without_import_buildings_keras_cannot_load_them(checkpoints):
    """The control: the registration above is what makes the difference."""
    result = python("serialization_load.py", "keras-only", checkpoints, "unet")
    assert result.returncode != 0 and "Upsample" in result.stderr


def test_imports_stay_light():
    from helpers import imported_after

    assert not {"keras", "torch"} & imported_after("buildings")
    models = imported_after("buildings.models")
    assert "keras" in models and not {"albumentations", "tensorflow_datasets", "buildings.data.pipeline"} & models
