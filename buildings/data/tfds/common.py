"""What the TFDS builders of this package share: the features of a segmentation example, the
hash hold-out that makes the validation split, and building a dataset without TensorFlow.

Every builder emits the same features, so the input pipeline, training and inference read any of
them the same way: ``image`` (the original JPEG bytes), ``mask`` (a single-channel PNG: {0, 1} for
binary datasets, class indices with 255 = unlabelled for multi-class ones), ``has_mask`` (false for
test images, whose mask is empty) and ``name`` (the image's file name). A multi-class dataset also
records ``num_classes`` and ``class_names`` in its metadata (``metadata.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from buildings.errors import DataError, OutputError
from buildings.files import atomic_dir
from buildings.formats.label_maps import encode_label_png

__all__ = ["build_tfds", "describe_holdout", "example", "is_validation", "segmentation_features", "split_sizes",
           "split_train_validation"]


def _hash_fraction(name: str) -> float:
    """The first 4 bytes of md5(name) as a fraction in [0, 1)."""
    return int.from_bytes(hashlib.md5(name.encode("utf-8")).digest()[:4], "big") / 2**32


def is_validation(name: str, percent: float) -> bool:
    """Deterministic hold-out: md5(name) as a fraction below ``percent``%."""
    return _hash_fraction(name) < percent / 100.0


def split_train_validation(names, percent: float) -> tuple[list[str], list[str]]:
    """(train, validation) names: the hash hold-out of ``percent``%, so the 5% hold-out is inside
    the 10% one, and so on. A small dataset whose hold-out comes out empty (or takes everything)
    still gets one validation image (the one of lowest hash, which every larger hold-out holds too)
    and one training image; fewer than two images are refused."""
    names = list(names)
    if len(names) < 2:
        raise DataError(f"{len(names)} training image(s): a dataset needs at least 2, one to train on and one "
                        "to validate on")
    validation = [n for n in names if is_validation(n, percent)]
    if not validation:
        validation = [min(names, key=_hash_fraction)]
    if len(validation) == len(names):
        validation.remove(max(validation, key=_hash_fraction))
    held_out = set(validation)
    return [n for n in names if n not in held_out], [n for n in names if n in held_out]


def describe_holdout(percent: float) -> str:
    """:func:`split_train_validation`'s rule, in words, for the person who built the dataset."""
    return (f"validation: the {percent:g} % of train whose image names hash lowest (md5), the same images on "
            "every build and inside any larger hold-out; at least one image")


def split_sizes(version_folder) -> dict[str, int]:
    """Images per split of a built dataset (train, validation, test order), from its dataset_info.json."""
    builder = tfds.builder_from_directory(str(version_folder))
    order = {"train": 0, "validation": 1, "test": 2}
    splits = sorted(builder.info.splits.items(), key=lambda item: (order.get(item[0], 3), item[0]))
    return {name: int(info.num_examples) for name, info in splits}


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



class _NotNews(logging.Filter):
    """TFDS warns that a dataset folder it is about to create "has no dataset_info.json": of course."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Variant folder") and "has no" in str(record.msg))


logging.getLogger("absl").addFilter(_NotNews())  # TFDS logs through absl's Python logger


def build_tfds(builder_class, manual_dir, data_dir=None, *, config=None, overwrite: bool = False) -> Path:
    """Build ``builder_class`` (array_record, no TensorFlow needed) from the files in ``manual_dir``;
    returns the version folder (an existing one is kept as it is unless ``overwrite``).

    The dataset is generated in a hidden staging folder beside its version folder and moved into
    place only once complete (``buildings.files.atomic_dir``): a failed build — bad data, a full
    disk, a kill — leaves nothing anyone would take for a dataset, and ``overwrite`` keeps the
    previous good dataset until the new one is whole."""
    data_dir = Path(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()
    final = builder_class(data_dir=str(data_dir), config=config)
    target = Path(final.data_dir)
    if (target / "dataset_info.json").is_file() and not overwrite:
        return target
    final.check_download(manual_dir)  # fail fast on names, text and image counts
    if not sys.stderr.isatty():  # tqdm's bars are escape codes and a line per redraw in a log
        tfds.disable_progress_bar()
    with atomic_dir(target) as staging, contextlib.redirect_stdout(io.StringIO()):  # TFDS prints the staging path
        builder = builder_class(data_dir=str(staging / "tfds"), config=config)
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=str(manual_dir), download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
        except RuntimeError as err:  # array_record reports OS failures (a full disk) as RuntimeError
            failure = re.search(r"(?:write|open|close|flush)\(\) failed: ([^;]+)", str(err))
            if failure is None:
                raise
            raise OutputError(f"{target}: cannot write the dataset: {failure.group(1).strip()}") from None
        for item in Path(builder.data_dir).iterdir():
            item.rename(staging / item.name)
        shutil.rmtree(staging / "tfds")
    return target
