"""The package's TFDS builders, one module a dataset (``tianchi_buildings``, ``land_parcels``), and
what they share (``common``: features, hash hold-out, building without TensorFlow). They live in
the package so that ``buildings data build`` works from a plain install; ``tfds_builder/<name>/``
subclasses each for TFDS's own ``tfds build`` command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATASETS", "BuiltDataset", "build"]

# The two kinds of dataset, by the names every command uses (data build / synth / import-labelme).
DATASETS = ("tianchi_buildings", "land_parcels")


@dataclass(frozen=True)
class BuiltDataset:
    path: Path  # the version folder
    kept: bool  # it was already complete and was left as it is (overwrite rebuilds it)
    splits: dict  # images per split: {"train": 113, "validation": 7, "test": 50}
    validation_rule: str  # how the validation split was drawn from train, in words

    def describe_splits(self) -> str:
        """``train 113, validation 7, test 50``."""
        return ", ".join(f"{name} {count}" for name, count in self.splits.items())


def build(dataset: str, manual_dir, data_dir=None, *, config: str = "val5", num_classes: int | None = None,
          validation_percent: float = 5.0, overwrite: bool = False) -> BuiltDataset:
    """Build ``dataset`` (one of :data:`DATASETS`) from the files in ``manual_dir``: the Tianchi
    download (``config`` = its validation hold-out) or the multi-class folders (``num_classes``,
    ``validation_percent``). A complete dataset already there is kept unless ``overwrite``."""
    from buildings.errors import ConfigError

    if dataset == "land_parcels":
        from buildings.data.tfds.land_parcels import build_land_parcels as builder

        options = {"num_classes": num_classes, "validation_percent": validation_percent}
        percent = validation_percent
    elif dataset == "tianchi_buildings":
        from buildings.data.tfds.tianchi_buildings import TianchiBuildings
        from buildings.data.tfds.tianchi_buildings import build_dataset as builder

        options = {"config": config}
        configs = TianchiBuildings.builder_configs
        if config not in configs:
            raise ConfigError(f"unknown config {config!r} of tianchi_buildings; choose from {', '.join(configs)}")
        percent = configs[config].validation_percent
    else:
        raise ConfigError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    import time

    from buildings.data.tfds.common import describe_holdout, split_sizes

    started = time.time()
    path = Path(builder(manual_dir, data_dir, overwrite=overwrite, **options))
    return BuiltDataset(path, kept=(path / "dataset_info.json").stat().st_mtime < started, splits=split_sizes(path),
                        validation_rule=describe_holdout(percent))
