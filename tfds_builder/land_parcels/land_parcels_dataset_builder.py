"""land_parcels dataset, in TFDS's dataset-folder convention.

    tfds build tfds_builder/land_parcels --manual_dir ~/parcels [--config classes7]

The builder lives in the package (``buildings.data.tfds.land_parcels``) so that the TensorFlow-free
``buildings data build --dataset land_parcels`` gives exactly the same dataset; this module only
names it the TFDS way. Output is array_record by default, which ``buildings fit --data land_parcels``
reads with no further step.
"""

from buildings.data.tfds.land_parcels import LandParcels


class Builder(LandParcels):
    """Multi-class aerial segmentation from img_train / lab_train / img_testA folders."""
