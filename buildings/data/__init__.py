"""Data: the contest download, the TFDS dataset, batches for training, synthetic demo data.

Submodules import their heavy dependencies (TFDS, Keras) themselves; importing this package
does not."""
