"""Child process of tests/test_backends.py: every model trains one short epoch on the active backend,
with augmentation on the device. Arguments: dataset folder, output folder."""

import json
import sys

import keras

from buildings.training import FitConfig, fit

data, out = sys.argv[1], sys.argv[2]
small = {"unet": {"filters": 4, "depth": 2}, "attunet": {"filters": 4, "depth": 2},
         "deeplabv3plus": {}, "fcn": {}}
results = {}
for name, options in small.items():
    # augmentation on the device (strong, CutMix) inside each backend's training step
    config = FitConfig(model=name, model_options=options, data=data, epochs=1, steps_per_epoch=2,
                       batch_size=2, image_size=64, resize_mode="resize", aug="strong", augment_on="device",
                       cutmix=0.5, verbose=0, run_dir=f"{out}/{keras.backend.backend()}-{name}")
    result = fit(config)
    results[name] = {"epochs": result.epochs_run, "best": result.best_dice}
print("RESULTS", json.dumps(results))
