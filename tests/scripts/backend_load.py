"""Child process of tests/test_backends.py: load the checkpoint backend_train.py wrote under the active
backend and print the largest difference from the outputs torch gave. Argument: folder."""

import sys

import keras
import numpy as np

from buildings.models import load_model

data = np.load(sys.argv[1] + "/io.npz")
model = load_model(sys.argv[1] + "/model.keras")
out = keras.ops.convert_to_numpy(model(data["x"], training=False))
print("MAXDIFF", float(np.abs(out - data["y"]).max()))
