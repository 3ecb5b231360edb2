"""Keras's own loader knows the package's objects after ``import buildings`` (whichever of Keras and
buildings is imported first), and importing the package or its models stays light. Each check runs
in a fresh interpreter, where nothing else has imported the modules that register them."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT

MODELS = {
    "unet": {"filters": 4, "depth": 2},
    "attunet": {"filters": 4, "depth": 2, "decoder_attention": "cbam"},
    "deeplabv3plus": {"decoder_attention": "se"},
    "fcn": {},
}


def python(code: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One compiled checkpoint per model (with the package's loss and metrics) and its outputs,
    written by a process that imported everything through buildings."""
    folder = tmp_path_factory.mktemp("checkpoints")
    result = python("""
        import json, sys, numpy as np, keras
        import buildings
        from buildings.losses import get_loss
        from buildings.models import build_model
        from buildings.task import Task
        folder, models = sys.argv[1], json.loads(sys.argv[2])
        x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
        np.save(f"{folder}/x.npy", x)
        for name, options in models.items():
            keras.utils.set_random_seed(0)
            model = build_model(name, **options)
            model.compile(optimizer="adam", loss=get_loss("bce_dice"), metrics=Task(1).metrics())
            model.save(f"{folder}/{name}.keras")
            np.save(f"{folder}/{name}.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    """, folder, json.dumps(MODELS))
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


LOAD = """
    import sys, numpy as np
    {imports}
    folder = sys.argv[1]
    x = np.load(f"{{folder}}/x.npy")
    for name in sys.argv[2:]:
        model = keras.saving.load_model(f"{{folder}}/{{name}}.keras")
        diff = np.abs(keras.ops.convert_to_numpy(model(x, training=False)) - np.load(f"{{folder}}/{{name}}.npy")).max()
        print(name, type(model.loss).__name__, float(diff))
"""


@pytest.mark.slow
@pytest.mark.parametrize("imports", ["import buildings\nimport keras", "import keras\nimport buildings"],
                         ids=["buildings-first", "keras-first"])
def test_keras_load_model_loads_every_model_after_import_buildings(checkpoints, imports):
    result = python(textwrap.dedent(LOAD).format(imports=imports), checkpoints, *MODELS)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] and line.split()[0] in MODELS]
    assert [r[0] for r in rows] == list(MODELS)
    for name, loss, diff in rows:
        assert loss == "BCEDiceLoss", name  # compiled with the package's loss, restored as such
        assert float(diff) < 1e-5, name


def test_without_import_buildings_keras_cannot_load_them(checkpoints):
    """The control: the registration above is what makes the difference."""
    result = python(textwrap.dedent(LOAD).format(imports="import keras"), checkpoints, "unet")
    assert result.returncode != 0 and "Upsample" in result.stderr


def test_imports_stay_light():
    result = python("""
        import sys
        import buildings
        light = 'keras' not in sys.modules and 'torch' not in sys.modules
        import buildings.models
        print(light, 'albumentations' in sys.modules, 'tensorflow_datasets' in sys.modules,
              'buildings.data.pipeline' in sys.modules)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "False", "False", "False"]
