"""TFDS's own builder test over dummy_data/ (4 train + 2 test synthetic tiles written by
`buildings data synth --out dummy_data --n 6 --seed 7`; val20 holds out 1 of the 4)."""

import pytest

pytest.importorskip("tensorflow", reason="tfds.testing.DatasetBuilderTestCase needs the `tf` extra")

import tensorflow_datasets as tfds  # noqa: E402

from . import tianchi_buildings_dataset_builder  # noqa: E402


class TianchiBuildingsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tianchi_buildings_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["val20"]
    SPLITS = {"train": 3, "validation": 1, "test": 2}
    SKIP_CHECKSUMS = True  # manual download: nothing to checksum

    def _make_builder(self, config=None):
        # TFDS's harness reads back with tf.data (`as_dataset`), which array_record (our default,
        # tested in tests/test_contest_data.py) does not offer: build tfrecord here.
        return self.dataset_class(data_dir=self.tmp_dir, config=config, version=self.VERSION,
                                  file_format="tfrecord")


if __name__ == "__main__":
    tfds.testing.test_main()
