"""Child process of tests/test_backends.py: load each checkpoint backend_train.py wrote under the
active backend and print the largest difference from the outputs torch gave. Arguments: one or
more folders; one process for all of them. Prints ``RESULTS {folder: max difference or the
error's traceback}``."""

import json
import sys
import traceback

import keras
import numpy as np

from buildings.models import load_model

results = {}
for folder in sys.argv[1:]:
    try:
        data = np.load(folder + "/io.npz")
        model = load_model(folder + "/model.keras")
        out = keras.ops.convert_to_numpy(model(data["x"], training=False))
        results[folder] = float(np.abs(out - data["y"]).max())
    except Exception:
        results[folder] = traceback.format_exc()
        traceback.print_exc()
print("RESULTS", json.dumps(results))
