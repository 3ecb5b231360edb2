"""Child of tests/training/test_distributed.py: a few training steps of a model without BatchNorm
through the package's data-parallel pieces (shard of each global batch, DDP wrapper, rank 0's
weights broadcast), in one process or in each rank of ``torchrun``.

argv: dataset folder, output folder, global batch size, steps. Writes ``weights-<world>.npz``
(rank 0) and ``shards-<world>-<rank>.json``: the source indices each batch of epochs 0 and 1 holds."""

import json
import sys
from pathlib import Path

import keras
import numpy as np

from buildings.config import FitConfig
from buildings.data.pipeline import SegmentationBatches
from buildings.data.splits import open_split
from buildings.training.distributed import replicas_for, start, stop_together
from buildings.training.objective import TrainingObjective
from buildings.training.training_model import TrainingModel

data, out, global_batch, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
replicas = start(replicas_for(None, keras.backend.backend()))
keras.utils.set_random_seed(0)
source = open_split(data, "train")
per_device = global_batch // replicas.devices
batches = SegmentationBatches(source, replicas.process_batch(per_device), image_size=32, augment="light",
                              training=True, seed=0, augment_on="device", shard=(replicas.rank, replicas.processes))
shards = {}
for epoch in (0, 1):
    batches.set_epoch(epoch)
    shards[epoch] = [[int(batches.order[p]) for p in batches.positions(i)] for i in range(len(batches))]
(out / f"shards-{replicas.processes}-{replicas.rank}.json").write_text(json.dumps(shards))
batches.set_epoch(0)

inputs = keras.Input((None, None, 3))
x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(x))  # no BatchNorm: replicas must agree exactly
trainer = TrainingModel(model)
config = FitConfig(epochs=1, batch_size=per_device, lr=1e-3, warmup_epochs=0, loss="bce_dice", num_classes=1,
                   class_weights=None)
TrainingObjective(config, source.task, steps).compile(trainer)
replicas.prepare(trainer)
callbacks = [c for c in [stop_together(replicas)] if c is not None]
trainer.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
if replicas.chief:
    np.savez(out / f"weights-{replicas.processes}.npz", *[np.asarray(w) for w in model.get_weights()])
replicas.close()
