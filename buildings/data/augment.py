"""Augmentation on the device, batched, in backend-neutral ``keras.ops``.

The CPU side draws each sample's augmentation as a short row of numbers
(:func:`draw_augment_params`, seeded from (seed, epoch, batch) in the data workers, so a run is
reproducible whatever the number of workers); the device side applies a whole batch of them inside
the training step (:func:`augment_images`, :func:`augment_masks`, called by
``buildings.training.training_model.TrainingModel``). No random state lives on the device, so the same code
runs under torch, jax (inside its stateless, compiled step) and tensorflow.

The presets match the albumentations ones of ``buildings.data.pipeline`` (the CPU path):

* ``light``: horizontal flip (p 0.5), vertical flip (p 0.5), rotation by a multiple of 90° (p 0.5);
* ``strong``: light + affine (p 0.5: scale 0.85–1.15, shift ±6.25 %, rotation ±30° about the
  centre, reflected borders), brightness / contrast ±0.2 (p 0.5), gamma 0.8–1.2 (p 0.3), and one of
  Gaussian blur 3 or 5 / Gaussian noise σ 0.02–0.08 (p 0.3);
* CutMix (per sample, probability ``cutmix``): a box of 10–50 % of the area from another sample of
  the batch, image and mask alike.

All geometry (flips, rotations, affine) is composed on the CPU into one 2x3 matrix per sample that
maps output pixels to input pixels, so the device warps each image once (bilinear) and each mask
once (nearest neighbour: masks keep exactly their values, class indices and 255 included). Flips and
quarter turns are exact integer permutations. Warps are written as gathers in ``keras.ops`` rather
than with ``keras.ops.image.affine_transform``, whose torch implementation maps coordinates image
by image and channel by channel.
"""

from __future__ import annotations

import math

import numpy as np

from buildings.errors import ConfigError

__all__ = ["AUGMENT_PARAMS", "augment_images", "augment_masks", "draw_augment_params", "identity_params"]

AUGMENT_PRESETS = ("none", "light", "strong")

# Layout of one sample's row of parameters.
MATRIX = slice(0, 6)  # output (x, y) -> input: x_in = a0 x + a1 y + a2, y_in = b0 x + b1 y + b2
BRIGHTNESS, CONTRAST, GAMMA, BLUR, NOISE_STD, NOISE_SEED = 6, 7, 8, 9, 10, 11
PARTNER, BOX = 12, slice(13, 17)  # CutMix: the other sample (-1: none) and the box y0, x0, y1, x1
AUGMENT_PARAMS = 17


def identity_params(n: int) -> np.ndarray:
    """Rows that change nothing."""
    params = np.zeros((n, AUGMENT_PARAMS), np.float32)
    params[:, MATRIX] = (1, 0, 0, 0, 1, 0)
    params[:, CONTRAST] = 1.0
    params[:, GAMMA] = 1.0
    params[:, PARTNER] = -1
    return params


def _compose(*matrices: np.ndarray) -> np.ndarray:
    out = np.eye(3)
    for m in matrices:
        out = out @ m
    return out


def _hflip(w):
    return np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]], float)


def _vflip(h):
    return np.array([[1, 0, 0], [0, -1, h - 1], [0, 0, 1]], float)


def _quarter_turn(n):
    """Output pixel (x, y) of one counter-clockwise quarter turn of an n x n image comes from
    input pixel (n - 1 - y, x) (``np.rot90``)."""
    return np.array([[0, -1, n - 1], [1, 0, 0], [0, 0, 1]], float)


def _affine(h, w, scale, shift_x, shift_y, degrees):
    """Inverse of: p' = R(θ) s (p - c) + c + t, about the centre c."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    inverse_rotation = np.array([[cos, sin], [-sin, cos]]) / scale
    m = np.eye(3)
    m[:2, :2] = inverse_rotation
    m[:2, 2] = np.array([cx, cy]) - inverse_rotation @ np.array([cx + shift_x, cy + shift_y])
    return m


def draw_augment_params(rng: np.random.Generator, n: int, height: int, width: int, preset: str,
                        cutmix: float = 0.0) -> np.ndarray:
    """(n, AUGMENT_PARAMS) float32: each sample's augmentation for a batch of ``height`` x ``width``
    images (see the module docstring for what each preset draws)."""
    if preset not in AUGMENT_PRESETS:
        raise ConfigError(f"augmentation must be one of {AUGMENT_PRESETS}, got {preset!r}")
    params = identity_params(n)
    for i in range(n):
        steps = []
        if preset in ("light", "strong"):
            if rng.random() < 0.5:
                steps.append(_hflip(width))
            if rng.random() < 0.5:
                steps.append(_vflip(height))
            if rng.random() < 0.5:
                turns = int(rng.integers(0, 4)) if height == width else 2 * int(rng.integers(0, 2))
                for _ in range(turns):  # a non-square batch turns only by 0 or 180 degrees
                    steps.append(_quarter_turn(width) if height == width else _compose(_hflip(width), _vflip(height)))
        if preset == "strong" and rng.random() < 0.5:
            steps.append(_affine(height, width, rng.uniform(0.85, 1.15), rng.uniform(-0.0625, 0.0625) * width,
                                 rng.uniform(-0.0625, 0.0625) * height, rng.uniform(-30, 30)))
        # the first step applied to the image is the outermost in the output -> input map
        params[i, MATRIX] = _compose(*steps)[:2].ravel()
        if preset == "strong":
            if rng.random() < 0.5:
                params[i, BRIGHTNESS] = rng.uniform(-0.2, 0.2)
                params[i, CONTRAST] = 1.0 + rng.uniform(-0.2, 0.2)
            if rng.random() < 0.3:
                params[i, GAMMA] = rng.uniform(0.8, 1.2)
            if rng.random() < 0.3:
                if rng.random() < 0.5:
                    params[i, BLUR] = 1 + int(rng.integers(0, 2))  # 1: 3x3, 2: 5x5
                else:
                    params[i, NOISE_STD] = rng.uniform(0.02, 0.08)
                    params[i, NOISE_SEED] = float(rng.integers(1, 2**16))
    if n >= 2 and cutmix > 0:
        for i in range(n):
            if rng.random() >= cutmix:
                continue
            area = rng.uniform(0.1, 0.5)
            h = max(1, int(height * math.sqrt(area)))
            w = max(1, int(width * math.sqrt(area)))
            y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            params[i, PARTNER] = (i + int(rng.integers(1, n))) % n
            params[i, BOX] = (y, x, y + h, x + w)
    return params


# -- device side -----------------------------------------------------------------------------------

def _grid(height, width):
    from keras import ops

    ys, xs = ops.meshgrid(ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"), indexing="ij")
    return ys, xs


def _reflect(coordinate, size):
    """Mirror coordinates into [0, size - 1] without repeating the edge (OpenCV's REFLECT_101)."""
    from keras import ops

    if size == 1:
        return ops.zeros_like(coordinate)
    period = 2.0 * (size - 1)
    t = ops.mod(ops.abs(coordinate), period)
    return ops.where(t > size - 1, period - t, t)


def _source_coordinates(params, height, width):
    """(B, H, W) input x and y of every output pixel, reflected into the image."""
    from keras import ops

    ys, xs = _grid(height, width)
    a = [ops.reshape(params[:, k], (-1, 1, 1)) for k in range(6)]
    sx = a[0] * xs + a[1] * ys + a[2]
    sy = a[3] * xs + a[4] * ys + a[5]
    return _reflect(sx, width), _reflect(sy, height)


def _gather(images, iy, ix):
    """images[b, iy, ix, :] for integer (B, H, W) indices: one flat ``take``."""
    from keras import ops

    batch, height, width, channels = ops.shape(images)
    flat = ops.reshape(images, (-1, channels))
    offsets = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    index = ops.reshape(offsets + iy * width + ix, (-1,))
    return ops.reshape(ops.take(flat, index, axis=0), (batch, height, width, channels))


def _warp(images, params, *, nearest: bool):
    from keras import ops

    height, width = images.shape[1], images.shape[2]
    height = ops.shape(images)[1] if height is None else height
    width = ops.shape(images)[2] if width is None else width
    sx, sy = _source_coordinates(params, height, width)
    if nearest:
        ix = ops.cast(ops.clip(ops.round(sx), 0, width - 1), "int32")
        iy = ops.cast(ops.clip(ops.round(sy), 0, height - 1), "int32")
        return _gather(images, iy, ix)
    x0, y0 = ops.floor(sx), ops.floor(sy)
    wx, wy = ops.expand_dims(sx - x0, -1), ops.expand_dims(sy - y0, -1)
    x0i = ops.cast(ops.clip(x0, 0, width - 1), "int32")
    y0i = ops.cast(ops.clip(y0, 0, height - 1), "int32")
    x1i = ops.minimum(x0i + 1, width - 1)
    y1i = ops.minimum(y0i + 1, height - 1)
    top = _gather(images, y0i, x0i) * (1 - wx) + _gather(images, y0i, x1i) * wx
    bottom = _gather(images, y1i, x0i) * (1 - wx) + _gather(images, y1i, x1i) * wx
    return top * (1 - wy) + bottom * wy


def _gaussian_kernel(size: int, channels: int) -> np.ndarray:
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a kernel size, as albumentations
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    g = np.outer(g, g) / np.outer(g, g).sum()
    return np.repeat(g[:, :, None, None], channels, axis=2).astype(np.float32)


def _hash_uniform(xs, ys, channel, seed):
    """Counter-based uniform numbers in (0, 1) from pixel, channel and seed (no device RNG state)."""
    from keras import ops

    v = ops.sin(xs * 12.9898 + ys * 78.233 + channel * 37.719 + seed * 0.61803) * 43758.5453
    return ops.clip(v - ops.floor(v), 1e-6, 1 - 1e-6)


def _noise(params, height, width, channels):
    from keras import ops

    ys, xs = _grid(height, width)
    seed = ops.reshape(params[:, NOISE_SEED], (-1, 1, 1))
    planes = []
    for c in range(channels):
        u1 = _hash_uniform(xs, ys, float(c), seed)
        u2 = _hash_uniform(xs + 0.5, ys + 0.25, float(c) + 11.0, seed + 3.0)
        planes.append(ops.sqrt(-2.0 * ops.log(u1)) * ops.cos(2 * math.pi * u2))  # Box-Muller
    return ops.stack(planes, axis=-1) * ops.reshape(params[:, NOISE_STD], (-1, 1, 1, 1))


def _cutmix(batch, params):
    from keras import ops

    height, width = ops.shape(batch)[1], ops.shape(batch)[2]
    ys, xs = _grid(height, width)
    box = [ops.reshape(params[:, k], (-1, 1, 1)) for k in range(BOX.start, BOX.stop)]
    inside = (ys >= box[0]) & (ys < box[2]) & (xs >= box[1]) & (xs < box[3])
    partner = ops.cast(ops.maximum(params[:, PARTNER], 0), "int32")
    return ops.where(ops.expand_dims(inside, -1), ops.take(batch, partner, axis=0), batch)


def augment_images(images, params):
    """Augment float images in [0, 1] (B, H, W, C) as ``params`` (B, AUGMENT_PARAMS) say."""
    from keras import ops

    params = ops.cast(params, "float32")
    images = _warp(images, params, nearest=False)
    channels = images.shape[-1]

    def per_sample(k):
        return ops.reshape(params[:, k], (-1, 1, 1, 1))

    images = ops.clip(images * per_sample(CONTRAST) + per_sample(BRIGHTNESS), 0.0, 1.0)
    images = ops.power(ops.maximum(images, 1e-6), per_sample(GAMMA))
    blur = per_sample(BLUR)
    blur3 = ops.depthwise_conv(images, _gaussian_kernel(3, channels), padding="same")
    blur5 = ops.depthwise_conv(images, _gaussian_kernel(5, channels), padding="same")
    images = ops.where(blur == 1, blur3, ops.where(blur == 2, blur5, images))
    images = images + _noise(params, ops.shape(images)[1], ops.shape(images)[2], channels)
    return _cutmix(ops.clip(images, 0.0, 1.0), params)


def augment_masks(masks, params):
    """Apply the geometry and CutMix of ``params`` to masks (B, H, W, 1): nearest neighbour, so
    every output value is an input value."""
    from keras import ops

    params = ops.cast(params, "float32")
    return _cutmix(_warp(masks, params, nearest=True), params)
