"""Child process of tests/deploy/test_export.py (KERAS_BACKEND=tensorflow): export FOLDER/unet.keras as a
SavedModel, serve FOLDER/x.npy through it and print the largest difference from FOLDER/y.npy."""

import sys

import numpy as np
import tensorflow as tf

from buildings.export import export_checkpoint

if __name__ == "__main__":
    folder = sys.argv[1]
    out = export_checkpoint(folder + "/unet.keras", folder + "/unet_saved_model", "saved_model")
    loaded = tf.saved_model.load(str(out))  # kept: its variables live as long as it does
    got = loaded.serve(tf.constant(np.load(folder + "/x.npy"))).numpy()
    print("DIFF", float(np.abs(got - np.load(folder + "/y.npy")).max()))
