"""The TFDS builder of the Tianchi building dataset (``tianchi_buildings``).

It lives in the package so that ``buildings data build`` works from a plain ``pip install``; the
TFDS dataset folder ``tfds_builder/tianchi_buildings/`` subclasses it so that TFDS's own
``tfds build tfds_builder/tianchi_buildings --manual_dir DIR`` finds it by TFDS's conventions.
Both give the same dataset name, version, splits and examples.

The builder emits encoded bytes only (the original JPEG as-is, the mask as PNG), so generation needs
no TensorFlow; the default file format is ``array_record`` so the result is readable with
``tfds.data_source`` (random access, no TensorFlow) whichever way it was built.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from buildings.data.contest import CONTEST_FILES, open_contest
from buildings.data.tfds.common import (
    build_tfds,
    example,
    is_validation,
    segmentation_features,
    split_train_validation,
)
from buildings.formats.rle import CONTEST_SHAPE

__all__ = ["TianchiBuildings", "TianchiBuildingsConfig", "build_dataset", "is_validation"]


MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Register for the Tianchi learning contest 地表建筑物识别 (building detection in aerial images), download
its four data files and put them, as downloaded or extracted, in one folder passed as --manual_dir:
  {CONTEST_FILES[0]}  (3.7 GB; or the extracted train/ folder)
  {CONTEST_FILES[1]}  (or the extracted train_mask.csv)
  {CONTEST_FILES[2]}  (or the extracted test_a/ folder)
  {CONTEST_FILES[3]}
"""


@dataclasses.dataclass
class TianchiBuildingsConfig(tfds.core.BuilderConfig):
    validation_percent: float = 5.0


class TianchiBuildings(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Tianchi 地表建筑物识别: 512x512 aerial JPEG tiles with binary building masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: train / validation (hash hold-out) / test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        TianchiBuildingsConfig(name="val5", description="5% of train held out for validation",
                               validation_percent=5.0),
        TianchiBuildingsConfig(name="val10", description="10% of train held out for validation",
                               validation_percent=10.0),
        TianchiBuildingsConfig(name="val20", description="20% of train held out for validation",
                               validation_percent=20.0),
    ]
    DEFAULT_CONFIG_NAME = "val5"

    def __init__(self, *, file_format=None, **kwargs):
        # array_record unless asked otherwise: readable without TensorFlow via tfds.data_source.
        super().__init__(file_format=file_format or "array_record", **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=segmentation_features(CONTEST_SHAPE),
            supervised_keys=("image", "mask"),
            disable_shuffling=True,  # keeps test in sample-submit order; loaders shuffle per epoch
            homepage="https://tianchi.aliyun.com/competition/entrance/531872",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        download = open_contest(dl_manager.manual_dir, shape=CONTEST_SHAPE)
        train, validation = split_train_validation(download.train_names, self.builder_config.validation_percent)
        splits = {
            "train": self._generate_examples(download, "train", train),
            "validation": self._generate_examples(download, "train", validation),
        }
        if download.test_names:  # no test_a in the folder: no test split
            splits["test"] = self._generate_examples(download, "test", download.test_names)
        return splits

    def _generate_examples(self, download, split, names):
        for item in download.examples(split, names):
            yield item.name, example(item.name, item.image_bytes, item.mask, CONTEST_SHAPE)

    def check_download(self, manual_dir) -> None:
        """Everything checkable before generation: names, RLE text, enough images for the splits."""
        download = open_contest(manual_dir, shape=CONTEST_SHAPE)
        split_train_validation(download.train_names, self.builder_config.validation_percent)


def build_dataset(manual_dir, data_dir=None, *, config: str = "val5", overwrite: bool = False):
    """Build ``tianchi_buildings/<config>`` from the contest files in ``manual_dir`` (no TensorFlow
    needed; array_record). Returns the version folder."""
    return build_tfds(TianchiBuildings, manual_dir, data_dir, config=config, overwrite=overwrite)
