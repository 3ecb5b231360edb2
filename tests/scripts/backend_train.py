"""Child process of tests/test_backends.py: train small models one epoch each under torch and save
each with its outputs. Arguments: one or more (folder, model name, model options as JSON) triples;
one process for all of them (torch and Keras are imported once). A model that fails writes its
traceback to ``folder/error.txt`` and the others still run; the exit status is 1 if any failed."""

import json
import sys
import traceback

import keras
import numpy as np

from buildings.losses import get_loss
from buildings.metrics import binary_metrics
from buildings.models import build_model

assert keras.backend.backend() == "torch"
args = sys.argv[1:]
assert args and len(args) % 3 == 0, "expected (folder, model, options) triples"
failed = 0
for folder, name, options in zip(args[::3], args[1::3], args[2::3], strict=True):
    try:
        keras.utils.set_random_seed(0)  # each model as if trained in a fresh process
        model = build_model(name, num_classes=1, **json.loads(options))
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), metrics=binary_metrics())
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4, 64, 64, 3)).astype("float32")
        y = (rng.random((4, 64, 64, 1)) < 0.3).astype("float32")
        model.fit(x, y, epochs=1, batch_size=2, verbose=0)
        model.save(folder + "/model.keras")
        np.savez(folder + "/io.npz", x=x, y=keras.ops.convert_to_numpy(model(x, training=False)))
    except Exception:
        failed = 1
        with open(folder + "/error.txt", "w") as out:
            out.write(traceback.format_exc())
        traceback.print_exc()
sys.exit(failed)
