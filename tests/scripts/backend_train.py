"""Child process of tests/test_backends.py: train a small model one epoch under torch and save it with
its outputs. Arguments: folder, model name, model options as JSON."""

import json
import sys

import keras
import numpy as np

from buildings.losses import get_loss
from buildings.metrics import binary_metrics
from buildings.models import build_model

assert keras.backend.backend() == "torch"
keras.utils.set_random_seed(0)
model = build_model(sys.argv[2], num_classes=1, **json.loads(sys.argv[3]))
model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), metrics=binary_metrics())
rng = np.random.default_rng(0)
x = rng.normal(size=(4, 64, 64, 3)).astype("float32")
y = (rng.random((4, 64, 64, 1)) < 0.3).astype("float32")
model.fit(x, y, epochs=1, batch_size=2, verbose=0)
model.save(sys.argv[1] + "/model.keras")
np.savez(sys.argv[1] + "/io.npz", x=x, y=keras.ops.convert_to_numpy(model(x, training=False)))
