"""Data, in the order it flows: the contest downloads on disk (``contest``: Tianchi zips + RLE CSVs;
``land_parcels``: multi-class folder layout) → TFDS datasets (``tfds/``: one builder a dataset) →
opened splits (``splits``) → batches for ``model.fit`` (``pipeline``); plus ``stats`` (counts,
fractions, preview grids) and ``synth`` (synthetic data in each contest's exact layout).

Submodules import their heavy dependencies (TFDS, Keras, albumentations) themselves; importing
this package does not."""
