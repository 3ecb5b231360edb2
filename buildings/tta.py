"""Test-time augmentation: the one table of views, applied to NumPy arrays (the ONNX backend) and
to Keras tensors on the device (``inference.device_model``) by the same two functions. NumPy-only,
so that anything (the command line's option choices among them) can import it.

Each view is (quarter turns of the (H, W) plane, then a flip of the width axis): ``none`` is the
image itself, ``flip`` adds the horizontal flip and the vertical one (a half turn followed by a
horizontal flip is the vertical flip: the same permutation of pixels), ``d4`` the 8 rotations and
reflections of the square. Probabilities are averaged after undoing each view (:func:`undo`).
"""

from __future__ import annotations

import numpy as np

from buildings.errors import ConfigError

__all__ = ["TTA_MODES", "TTA_VIEWS", "apply", "undo", "views"]

TTA_VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True), (2, True)),
    "d4": tuple((turns, flip) for turns in range(4) for flip in (False, True)),
}
TTA_MODES = tuple(TTA_VIEWS)


def views(mode: str) -> tuple[tuple[int, bool], ...]:
    """The (turns, flip) views of ``mode``; a ConfigError names the modes for anything else."""
    if mode not in TTA_VIEWS:
        raise ConfigError(f"tta must be one of {TTA_MODES}, got {mode!r}")
    return TTA_VIEWS[mode]


def _rot90(x, turns: int, xp):
    """``np.rot90(x, turns, axes=(1, 2))`` for (B, H, W, C) arrays in ``xp`` (NumPy or keras.ops),
    written with transposes and flips: ``keras.ops.rot90`` on the tensorflow backend (Keras 3.15.1)
    returns a wrong result for two turns of 4-D tensors (tests/inference/test_probability_model.py)."""
    turns %= 4
    if turns == 0:
        return x
    if turns == 2:
        return xp.flip(xp.flip(x, axis=1), axis=2)
    if turns == 1:
        return xp.transpose(xp.flip(x, axis=2), (0, 2, 1, 3))
    return xp.flip(xp.transpose(x, (0, 2, 1, 3)), axis=2)


def apply(x, view: tuple[int, bool], xp=np):
    """The view ``(turns, flip)`` of a (B, H, W, C) batch."""
    turns, flip = view
    x = _rot90(x, turns, xp)
    return xp.flip(x, axis=2) if flip else x


def undo(y, view: tuple[int, bool], xp=np):
    """Undo :func:`apply` on the model's output for that view."""
    turns, flip = view
    y = xp.flip(y, axis=2) if flip else y
    return _rot90(y, -turns, xp)
