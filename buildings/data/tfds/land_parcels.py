"""The TFDS builder of multi-class folder datasets (``land_parcels``): the CCF BDCI 遥感影像地块分割
layout (``img_train/*.jpg`` + ``lab_train/*.png`` + ``img_testA/*.jpg``) read by
:func:`buildings.data.land_parcels.open_land_parcels`.

Same features as ``tianchi_buildings`` (see :mod:`buildings.data.tfds.common`), so the input
pipeline, training and inference serve both with one code path; the mask holds class indices with
255 = unlabelled, and ``metadata.json`` records ``num_classes`` and ``class_names``. Images of any
size are accepted (256x256 in that contest). As for ``tianchi_buildings``, the TFDS dataset folder
``tfds_builder/land_parcels/`` subclasses this builder for ``tfds build``.

Configs: ``classes4`` (default: 建筑 building, 耕地 farmland, 林地 forest, 其他 other), ``classes7``
(the 2020 contest's seven classes) and ``classes2`` (background / building), each with 5% of train
held out for validation; :func:`parcels_config` makes any other (``classes3_val10``).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from buildings.data.land_parcels import (
    TEST_IMAGES,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    class_names_for,
    open_land_parcels,
)
from buildings.data.tfds.common import build_tfds, example, segmentation_features, split_train_validation
from buildings.errors import ConfigError

__all__ = ["LandParcels", "LandParcelsConfig", "build_land_parcels", "parcels_config"]

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the contest data (CCF BDCI 2020 遥感影像地块分割, or the PaddlePaddle learning contest built
from it) and put it in one folder passed as --manual_dir, extracted or as zips:
  {TRAIN_IMAGES}/   training images (*.jpg)
  {TRAIN_LABELS}/   training labels (*.png, class indices 0..N-1, 255 = unlabelled)
  {TEST_IMAGES[0]}/   test images (*.jpg; {TEST_IMAGES[1]}/ or {TEST_IMAGES[2]}/ also accepted)
Each may also be a zip of that name, or a folder of that name inside a zip (train_and_label.zip).
"""


@dataclasses.dataclass
class LandParcelsConfig(tfds.core.BuilderConfig):
    num_classes: int = 4
    class_names: tuple[str, ...] = ()
    validation_percent: float = 5.0


def parcels_config(num_classes: int = 4, validation_percent: float = 5.0,
                   class_names: tuple[str, ...] | None = None) -> LandParcelsConfig:
    """A config named ``classes<N>`` (``classes<N>_val<P>`` when the hold-out is not 5%)."""
    if num_classes < 2:
        raise ConfigError(f"a multi-class dataset needs at least 2 classes, got {num_classes}")
    names = tuple(class_names) if class_names else class_names_for(num_classes)
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for {num_classes} classes")
    name = f"classes{num_classes}" + ("" if validation_percent == 5.0 else f"_val{validation_percent:g}")
    return LandParcelsConfig(
        name=name, num_classes=num_classes, class_names=names, validation_percent=validation_percent,
        description=f"{num_classes} classes ({', '.join(names)}); {validation_percent:g}% of train held "
                    "out for validation")


class LandParcels(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Multi-class aerial segmentation from img_train / lab_train / img_testA folders."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: train / validation (hash hold-out) / test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [parcels_config(4), parcels_config(7), parcels_config(2)]
    DEFAULT_CONFIG_NAME = "classes4"

    def __init__(self, *, file_format=None, **kwargs):
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            features=segmentation_features(),
            supervised_keys=("image", "mask"),
            disable_shuffling=True,  # test stays in file-name order; loaders shuffle per epoch
            metadata=tfds.core.MetadataDict(num_classes=config.num_classes,
                                            class_names=list(config.class_names)),
            homepage="https://www.datafountain.cn/competitions/475",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        download = self.check_download(dl_manager.manual_dir)
        train, validation = split_train_validation(download.train_names, self.builder_config.validation_percent)
        splits = {
            "train": self._generate_examples(download, "train", train),
            "validation": self._generate_examples(download, "train", validation),
        }
        if download.test_names:  # no img_testA in the folder: no test split
            splits["test"] = self._generate_examples(download, "test", download.test_names)
        return splits

    def _generate_examples(self, download, split, names):
        for item in download.examples(split, names):
            yield item.name, example(item.name, item.image_bytes, item.labels, item.shape)

    def check_download(self, manual_dir):
        """Everything checkable before generation: names, enough images for the splits."""
        download = open_land_parcels(manual_dir, num_classes=self.builder_config.num_classes)
        split_train_validation(download.train_names, self.builder_config.validation_percent)
        return download


CLASSES_FILE = "classes.txt"  # one class name per line, index order (written by `data import-labelme`)


def build_land_parcels(manual_dir, data_dir=None, *, num_classes: int | None = None, validation_percent: float = 5.0,
                       overwrite: bool = False):
    """Build ``land_parcels/classes<N>[_val<P>]`` from the folders in ``manual_dir`` (no TensorFlow
    needed; array_record). The class names come from ``manual_dir/classes.txt`` when it is there
    (its line count is then the number of classes), else the contest's for ``num_classes`` (default 4).
    Returns the version folder."""
    from pathlib import Path

    names = None
    listed = Path(manual_dir) / CLASSES_FILE
    if listed.is_file():
        names = tuple(line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip())
        if num_classes is not None and num_classes != len(names):
            raise ConfigError(f"{listed} names {len(names)} classes but --num-classes is {num_classes}")
        num_classes = len(names)
    config = parcels_config(4 if num_classes is None else num_classes, validation_percent, names)
    predefined = {c.name for c in LandParcels.BUILDER_CONFIGS}
    return build_tfds(LandParcels, manual_dir, data_dir, config=config.name if config.name in predefined else config,
                  overwrite=overwrite)
