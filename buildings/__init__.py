"""buildings: aerial images to building masks with Keras 3 on torch, jax or tensorflow.

Importing this package makes torch the Keras backend unless ``KERAS_BACKEND`` is already set
(Keras itself would pick tensorflow), and registers the package's layers, losses and metrics with
Keras as soon as Keras is imported (``buildings.serialization``), so ``keras.saving.load_model``
loads its checkpoints. Keras is not imported here: ``import buildings`` stays cheap and the RLE /
submission tools work without touching a deep-learning framework.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
# TensorFlow, when installed, is imported by some Keras / TFDS utilities even on other backends;
# keep its C++ start-up chatter (oneDNN, absl) off the terminal unless the user asks for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from buildings.serialization import register_when_keras_loads  # noqa: E402

register_when_keras_loads()

from buildings.errors import BuildingsError  # noqa: E402
from buildings.formats.rle import decode_rle, encode_rle, validate_rle  # noqa: E402
from buildings.formats.submission import (  # noqa: E402
    SubmissionScore,
    image_dice,
    image_iou,
    mean_image_dice,
    read_submission,
    score_submission,
    write_submission,
)

__version__ = "0.1.0"

__all__ = [
    "BuildingsError",
    "SubmissionScore",
    "__version__",
    "decode_rle",
    "encode_rle",
    "image_dice",
    "image_iou",
    "mean_image_dice",
    "read_submission",
    "score_submission",
    "validate_rle",
    "write_submission",
]
