"""Child process of tests/models/test_serialization.py: load checkpoints with Keras's own
``keras.saving.load_model`` after importing ``buildings`` first, Keras first, or Keras alone, and
print, per model, its loss class and the largest output difference. Arguments: order, folder, models."""

import importlib
import sys

import numpy as np

ORDERS = {"buildings-first": ("buildings", "keras"), "keras-first": ("keras", "buildings"), "keras-only": ("keras",)}

if __name__ == "__main__":
    order, folder, *names = sys.argv[1:]
    for module in ORDERS[order]:
        importlib.import_module(module)
    import keras

    x = np.load(f"{folder}/x.npy")
    for name in names:
        model = keras.saving.load_model(f"{folder}/{name}.keras")
        diff = np.abs(keras.ops.convert_to_numpy(model(x, training=False)) - np.load(f"{folder}/{name}.npy")).max()
        print(name, type(model.loss).__name__, float(diff))
