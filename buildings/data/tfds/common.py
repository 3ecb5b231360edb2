"""What the TFDS builders of this package share: the features of a segmentation example, the
hash hold-out that makes the validation split, and building a dataset without TensorFlow.

Every builder emits the same features, so the input pipeline, training and inference read any of
them the same way: ``image`` (the original JPEG bytes), ``mask`` (a single-channel PNG: {0, 1} for
binary datasets, class indices with 255 = unlabelled for multi-class ones), ``has_mask`` (false for
test images, whose mask is empty) and ``name`` (the image's file name). A multi-class dataset also
records ``num_classes`` and ``class_names`` in its metadata (``metadata.json``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from buildings.formats.label_maps import encode_label_png

__all__ = ["build_tfds", "example", "is_validation", "segmentation_features"]


def is_validation(name: str, percent: float) -> bool:
    """Deterministic hold-out: the first 4 bytes of md5(name) as a fraction below ``percent``%."""
    digest = hashlib.md5(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < percent / 100.0


def segmentation_features(shape: tuple[int | None, int | None] = (None, None)) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(*shape, 3), encoding_format="jpeg"),
        "mask": tfds.features.Image(shape=(*shape, 1), encoding_format="png"),
        "has_mask": np.bool_,
        "name": tfds.features.Text(),
    })


def example(name: str, image_bytes: bytes, mask: np.ndarray | None, shape: tuple[int, int]) -> dict:
    """One example's features; a test image (``mask`` None) gets an empty mask of ``shape``."""
    has_mask = mask is not None
    if mask is None:
        mask = np.zeros(shape, np.uint8)
    return {"image": image_bytes, "mask": encode_label_png(mask), "has_mask": has_mask, "name": name}


def build_tfds(builder_class, manual_dir, data_dir=None, *, config=None, overwrite: bool = False) -> Path:
    """Build ``builder_class`` (array_record, no TensorFlow needed) from the files in ``manual_dir``;
    returns the version folder. A failed build leaves nothing TFDS or ``buildings`` would take for
    a dataset (TFDS writes into an ``incomplete.*`` folder and renames it only at the end)."""
    data_dir = Path(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()
    builder = builder_class(data_dir=str(data_dir), config=config)
    builder.check_download(manual_dir)  # fail fast on names / text before TFDS starts
    mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    if overwrite:
        mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir), download_mode=mode))
    return Path(builder.data_dir)
