"""Child process of tests: ``build PATH NUM_CLASSES`` saves a small seeded U-Net; ``load PATH...``
loads each checkpoint (exit status 1 with the error when one does not load)."""

import sys

import keras

from buildings.models import build_model, load_model

if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "build":
        keras.utils.set_random_seed(0)
        build_model("unet", filters=4, depth=2, num_classes=int(args[1])).save(args[0])
    else:
        for path in args:
            load_model(path)
