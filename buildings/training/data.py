"""What a run learns from and is scored on: the training and validation splits, and their loaders.

:meth:`TrainingData.open` opens the dataset's train / validation splits, or, with ``folds``, the
training split's fold ``fold`` as validation and the others as training
(``buildings.data.splits.kfold_sources``); :meth:`TrainingData.batches` makes the loaders
(``buildings.data.pipeline.SegmentationBatches``: uint8 batches, augmentation seeded per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

from buildings.config import FitConfig
from buildings.contract import round_up_to_stride
from buildings.data.pipeline import SegmentationBatches
from buildings.data.splits import SplitSource, kfold_sources, open_split
from buildings.task import Task
from buildings.training.distributed import ONE_DEVICE, Replicas

__all__ = ["Batches", "TrainingData"]


@dataclass(frozen=True)
class Batches:
    """The loaders of a run: ``train`` (shuffled, augmented, cropped) and ``validation`` (whole
    images by default); ``steps``: training steps per epoch."""

    train: SegmentationBatches
    validation: SegmentationBatches | None  # None on the ranks that do not validate
    steps: int


@dataclass(frozen=True)
class TrainingData:
    """The training and validation images of a run (k-fold applied)."""

    train: SplitSource
    validation: SplitSource

    @classmethod
    def open(cls, config: FitConfig) -> TrainingData:
        train = open_split(config.data, "train", config.data_dir)
        validation = open_split(config.data, "validation", config.data_dir)
        if config.folds:
            train, validation = kfold_sources(train, config.folds, config.fold)
        return cls(train, validation)

    @property
    def task(self) -> Task:
        """What the masks label (binary or N named classes): the training split's."""
        return self.train.task

    def batches(self, config: FitConfig, model, *, accelerator: bool, replicas: Replicas = ONE_DEVICE) -> Batches:
        """The loaders for ``config`` (final: see ``buildings.config.resolve_fit_config``);
        ``model`` sizes the validation batches when ``eval_batch_size`` is not given. With several
        ``replicas``, this process loads its shard of each global batch (``batch_size`` per
        device), and only rank 0 validates (None elsewhere)."""
        loader = {"workers": config.workers, "use_multiprocessing": config.use_multiprocessing}
        train = SegmentationBatches(self.train, replicas.process_batch(config.batch_size), image_size=config.image_size,
                                    augment=config.aug, shard=(replicas.rank, replicas.processes),
                                    training=True, seed=config.seed, cutmix=config.cutmix,
                                    resize_mode=config.resize_mode, augment_on=config.augment_on_for(accelerator),
                                    **loader)
        val_size = None if config.resize_mode == "crop" else config.image_size
        validation = SegmentationBatches(self.validation, config.eval_batch_size or
                                         _eval_batch_size(model, self.validation, val_size),
                                         image_size=val_size, **loader) if _validates(replicas) else None
        return Batches(train, validation, steps=min(len(train), config.steps_per_epoch or len(train)))


def _validates(replicas: Replicas) -> bool:
    """torch.distributed validates on rank 0 alone (the same score as one process on the same weights);
    a jax run's validation is one program over every process."""
    return replicas.chief or replicas.engine == "jax"


def _eval_batch_size(model, source, image_size) -> int:
    """Validation images per batch: as many full images as fit the memory budget (validation runs
    on whole stored images, larger than training crops; the training batch size would not fit)."""
    from buildings.data.splits import decode_record
    from buildings.runtime.device import batch_size_for

    if image_size is None:
        height, width = decode_record(source[0])[0].shape[:2]
    else:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    return batch_size_for([model], round_up_to_stride(height), round_up_to_stride(width))
