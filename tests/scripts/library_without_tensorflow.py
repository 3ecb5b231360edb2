"""Child process of tests/cli/test_imports.py: the library API on the torch backend with TensorFlow
installed — build and save a model, train it one epoch with ``fit``, load it and predict — then
print whether TensorFlow was imported. Argument: a built dataset folder, a scratch folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"

if __name__ == "__main__":
    data, scratch = sys.argv[1], Path(sys.argv[2])
    import numpy as np

    from buildings.config import FitConfig
    from buildings.inference import Predictor
    from buildings.models import build_model
    from buildings.training import fit

    steps = []
    build_model("unet", filters=4, depth=2).save(scratch / "built.keras")
    steps.append(("save", "tensorflow" in sys.modules))
    result = fit(FitConfig(model="unet", model_options={"filters": 4, "depth": 2}, data=data, image_size=64,
                           batch_size=2, epochs=1, steps_per_epoch=1, eval_batch_size=2,
                           run_dir=str(scratch / "run")))
    steps.append(("fit", "tensorflow" in sys.modules))
    predictor = Predictor.from_checkpoints([result.run_dir / "best.keras"], batch_size=1)
    predictor.mask(predictor.probabilities(np.zeros((64, 64, 3), np.uint8)))
    steps.append(("predict", "tensorflow" in sys.modules))
    print(json.dumps(steps))
