"""The package's TFDS builders, one module a dataset (``tianchi_buildings``, ``land_parcels``), and
what they share (``common``: features, hash hold-out, building without TensorFlow). They live in
the package so that ``buildings data build`` works from a plain install; ``tfds_builder/<name>/``
subclasses each for TFDS's own ``tfds build`` command."""
