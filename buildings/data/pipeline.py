"""Batches for ``model.fit`` from a built dataset's split: the same code on torch, jax and tensorflow.

``SegmentationBatches`` is a ``keras.utils.PyDataset`` over a :class:`~buildings.data.splits.SplitSource`:
**uint8** batches ``({"image": (B, H, W, 3)}, mask (B, H, W, 1))`` — a quarter of the bytes of
float32 to hold and to copy to the device, where ``buildings.training.training_model`` normalises
them — worker threads or processes, and a per-epoch shuffle. Augmentation runs either

* on the CPU (``augment_on="cpu"``): albumentations per sample in the workers, as before; or
* on the device (``augment_on="device"``): the workers only read, decode and crop, and add one row
  of augmentation parameters per sample (``"augment"`` in the inputs, ``buildings.data.augment``)
  that the training step applies to the whole batch on the accelerator.

Either way each sample's augmentation is seeded from (seed, epoch, position / batch), so a run is
reproducible whatever the number of workers.

Binary and multi-class datasets take the same path: masks are carried as stored ({0, 1}, or class
indices with 255 = unlabelled), never binarised or one-hot encoded here; the only difference, the
fill value of padded mask pixels, comes from the source's :class:`~buildings.task.Task`.
"""

from __future__ import annotations

import math
import threading

import albumentations as A
import cv2
import keras
import numpy as np

from buildings.config import AUGMENT_ON, AUGMENTATIONS
from buildings.contract import STRIDE
from buildings.data.augment import draw_augment_params
from buildings.data.splits import decode_record
from buildings.errors import ConfigError
from buildings.task import Task

__all__ = ["AUGMENTATIONS", "AUGMENT_ON", "SegmentationBatches", "build_augmentation", "cutmix", "pad_batch"]



def build_augmentation(preset: str, image_size: int | tuple[int, int] | None = None, *,
                       training: bool = True, resize_mode: str = "crop", mask_fill: int = 0) -> A.Compose:
    """The albumentations pipeline of a preset (``none``, ``light``, ``strong``).

    ``image_size`` (side or (height, width)) crops (training, ``resize_mode='crop'``; images smaller
    than it are padded, masks with ``mask_fill``) or resizes to that size. Masks use
    nearest-neighbour interpolation everywhere, so they keep their values (binary or class indices).
    """
    if preset not in AUGMENTATIONS:
        raise ConfigError(f"augmentation must be one of {AUGMENTATIONS}, got {preset!r}")
    steps = []
    if image_size is not None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        if training and resize_mode == "crop":
            steps.append(A.RandomCrop(height, width, pad_if_needed=True, fill_mask=mask_fill))
        else:
            steps.append(A.Resize(height, width, mask_interpolation=cv2.INTER_NEAREST))
    if training and preset in ("light", "strong"):
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    if training and preset == "strong":
        steps += [
            A.Affine(scale=(0.85, 1.15), translate_percent=(-0.0625, 0.0625), rotate=(-30, 30),
                     border_mode=cv2.BORDER_REFLECT_101, mask_interpolation=cv2.INTER_NEAREST, p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.3),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
        ]
    return A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST)


def cutmix(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, p: float) -> None:
    """In place: with probability ``p`` per sample, paste a random box (10-50% of the area) from
    another sample of the batch into it, image and mask alike."""
    n, height, width = images.shape[:3]
    if n < 2 or p <= 0:
        return
    for i in range(n):
        if rng.random() >= p:
            continue
        j = (i + int(rng.integers(1, n))) % n
        area = rng.uniform(0.1, 0.5)
        h = max(1, int(height * math.sqrt(area)))
        w = max(1, int(width * math.sqrt(area)))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        images[i, y:y + h, x:x + w] = images[j, y:y + h, x:x + w]
        masks[i, y:y + h, x:x + w] = masks[j, y:y + h, x:x + w]


def pad_batch(images: list[np.ndarray], masks: list[np.ndarray], mask_fill: int, multiple: int = STRIDE):
    """Stack images / masks of possibly different sizes, padded (bottom and right) to the largest
    height and width rounded up to ``multiple`` (every model takes multiples of the stride, ``contract.STRIDE``): images with 0,
    masks with ``mask_fill``."""
    height = -(-max(i.shape[0] for i in images) // multiple) * multiple
    width = -(-max(i.shape[1] for i in images) // multiple) * multiple
    out_images = np.zeros((len(images), height, width, 3), np.uint8)
    out_masks = np.full((len(masks), height, width), mask_fill, np.uint8)
    for k, (image, mask) in enumerate(zip(images, masks, strict=True)):
        out_images[k, :image.shape[0], :image.shape[1]] = image
        out_masks[k, :mask.shape[0], :mask.shape[1]] = mask
    return out_images, out_masks


class SegmentationBatches(keras.utils.PyDataset):
    """Batches of ({"image": uint8 RGB (B, H, W, 3)[, "augment": float32 (B, P)]}, uint8 mask (B, H, W, 1)).

    Masks keep their stored values: {0, 1} for a binary dataset, class indices with 255 =
    unlabelled for a multi-class one. Images of different sizes in a batch (or sizes that are not
    multiples of the stride) are padded to a common multiple of it, masks with ``mask_fill``.

    Args:
        source: a :class:`SplitSource` (or any sequence of raw records).
        batch_size: images per batch.
        image_size: crop / resize side (or (height, width)); None keeps the stored size.
        augment: ``none``, ``light`` or ``strong`` (training only).
        augment_on: ``cpu`` (albumentations in the workers) or ``device`` (parameters drawn here,
            applied in the training step).
        training: shuffle every epoch, augment, random-crop, drop the last partial batch.
        seed: the order and every augmentation follow from it.
        cutmix: probability that a training sample receives a box from another one.
        resize_mode: ``crop`` (random crops in training, resize otherwise) or ``resize``.
        mask_fill: value of padded mask pixels; default the source task's (0 for binary, 255 =
            ignored by the multi-class losses and metrics).
        workers, use_multiprocessing, max_queue_size: as ``keras.utils.PyDataset``.
        shard: ``(index, count)``: training only, this process's slice of every global batch of
            ``count * batch_size`` images when ``count`` processes train together
            (``buildings.training.distributed``): every process shuffles with the same permutation,
            and global batch ``i`` is the batch ``i`` one process would load with ``count *
            batch_size``, crops and device augmentation included, so the shards of an epoch are
            disjoint and together are what one process would see. CPU CutMix pairs samples within
            a shard.
    """

    def __init__(self, source, batch_size: int = 8, *, image_size=None, augment: str = "none",
                 training: bool = False, seed: int = 0, cutmix: float = 0.0, resize_mode: str = "crop",
                 augment_on: str = "cpu", mask_fill: int | None = None, workers: int = 1,
                 use_multiprocessing: bool = False, max_queue_size: int = 10, shard: tuple[int, int] = (0, 1)):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.source = source
        self.batch_size = batch_size
        self.shard, self.shards = shard if training else (0, 1)
        if not 0 <= self.shard < self.shards:
            raise ConfigError(f"shard {shard}: expected (index, count) with 0 <= index < count")
        self.training = training
        self.seed = seed
        self.cutmix_p = cutmix
        if mask_fill is None:
            mask_fill = getattr(source, "task", Task(1)).mask_fill
        self.mask_fill = mask_fill
        if augment_on not in AUGMENT_ON:
            raise ConfigError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
        self.augment_on = augment_on
        self.device_augment = augment if training and augment_on == "device" else None
        cpu_augment = "none" if augment_on == "device" else augment  # the device path crops only here
        self._augmentation = (cpu_augment, image_size, training, resize_mode, mask_fill)
        build_augmentation(augment, image_size, training=training, resize_mode=resize_mode,
                           mask_fill=mask_fill)  # check args
        self._local = threading.local()
        self.epoch = 0
        self.order = self._order(0)
        if len(self) == 0:
            raise ConfigError(f"{len(source)} examples give no full batch of {batch_size}"
                              + (f" on each of {self.shards} processes" if self.shards > 1 else ""))

    def _order(self, epoch: int) -> np.ndarray:
        if not self.training:
            return np.arange(len(self.source))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.source))

    def __len__(self) -> int:
        n = len(self.source)
        return n // (self.batch_size * self.shards) if self.training else math.ceil(n / self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch``'s order (resuming a run)."""
        self.epoch = epoch
        self.order = self._order(epoch)

    def load(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The augmented (RGB uint8 image, uint8 mask) at ``position`` of this epoch's order."""
        image, mask = decode_record(self.source[int(self.order[position])])
        transform = self._transform()
        transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, position]).generate_state(1)[0]))
        out = transform(image=image, mask=mask)
        return out["image"], out["mask"]

    def _transform(self) -> A.Compose:
        """One albumentations pipeline per worker thread: re-seeding a shared one would race."""
        transform = getattr(self._local, "transform", None)
        if transform is None:
            augment, image_size, training, resize_mode, mask_fill = self._augmentation
            transform = build_augmentation(augment, image_size, training=training, resize_mode=resize_mode,
                                           mask_fill=mask_fill)
            self._local.transform = transform
        return transform

    def __getstate__(self):  # for worker processes: thread-locals do not pickle
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def positions(self, index: int) -> range:
        """The positions in this epoch's order that batch ``index`` loads (this shard's slice of
        global batch ``index``); ``order[positions]`` are the source's indices."""
        first = (index * self.shards + self.shard) * self.batch_size
        return range(first, min(first + self.batch_size, len(self.order)))

    def __getitem__(self, index: int):
        if index >= len(self):
            raise IndexError(f"batch {index} out of range ({len(self)} batches)")
        positions = self.positions(index)
        pairs = [self.load(p) for p in positions]
        images, masks = pad_batch([p[0] for p in pairs], [p[1] for p in pairs], self.mask_fill)
        inputs = {"image": images}
        if self.device_augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index, 2])
            drawn = draw_augment_params(rng, len(images) * self.shards, images.shape[1], images.shape[2],
                                        self.device_augment, self.cutmix_p)  # the global batch's, sliced
            inputs["augment"] = drawn[self.shard * len(images): (self.shard + 1) * len(images)]
        elif self.training and self.cutmix_p > 0:
            cutmix(images, masks, np.random.default_rng([self.seed, self.epoch, index, 1]), self.cutmix_p)
        return inputs, masks[..., None]
