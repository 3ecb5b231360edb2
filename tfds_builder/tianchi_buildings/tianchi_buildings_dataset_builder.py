"""tianchi_buildings dataset, in TFDS's dataset-folder convention.

    tfds build tfds_builder/tianchi_buildings --manual_dir ~/tianchi [--config val10]

The builder itself lives in the package (``buildings.data.tfds.tianchi_buildings``) so that the
TensorFlow-free ``buildings data build`` gives exactly the same dataset; this module only names it
the TFDS way (a class called ``Builder`` in ``<name>_dataset_builder.py``). Output is array_record
by default, which ``buildings fit --data tianchi_buildings`` reads with no further step.
"""

from buildings.data.tfds.tianchi_buildings import TianchiBuildings


class Builder(TianchiBuildings):
    """Tianchi 地表建筑物识别: 512x512 aerial JPEG tiles with binary building masks."""
