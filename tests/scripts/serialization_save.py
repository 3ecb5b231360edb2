"""Child process of tests/models/test_serialization.py: one compiled checkpoint per model (the package's loss
and metrics) and its outputs on one input. Arguments: folder, {model: options} as JSON."""

import json
import sys

import keras
import numpy as np

import buildings  # noqa: F401
from buildings.losses import get_loss
from buildings.models import build_model
from buildings.task import Task

if __name__ == "__main__":
    folder, models = sys.argv[1], json.loads(sys.argv[2])
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    np.save(f"{folder}/x.npy", x)
    for name, options in models.items():
        keras.utils.set_random_seed(0)
        model = build_model(name, **options)
        model.compile(optimizer="adam", loss=get_loss("bce_dice"), metrics=Task(1).metrics())
        model.save(f"{folder}/{name}.keras")
        np.save(f"{folder}/{name}.npy", keras.ops.convert_to_numpy(model(x, training=False)))
