"""The numbers every model and every window agree on, NumPy-free and import-free so that anything
(the command line, the data pipeline, the ONNX path without Keras) can use them.

* :data:`STRIDE`: every model's input height and width are multiples of it (the deepest feature
  map is 1/32 of the input) and its output has the input's size; tiling pads to it, training crops
  to it, export declares it.
"""

from __future__ import annotations

__all__ = ["STRIDE", "check_stride_multiple", "round_up_to_stride"]

STRIDE = 32


def round_up_to_stride(length: int) -> int:
    """The smallest multiple of :data:`STRIDE` that holds ``length`` pixels."""
    return -(-int(length) // STRIDE) * STRIDE


def check_stride_multiple(value: int, what: str) -> int:
    """``value`` if it is a positive multiple of :data:`STRIDE`; else a ConfigError naming ``what``."""
    from buildings.errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or value < STRIDE or value % STRIDE:
        raise ConfigError(f"{what} must be a multiple of {STRIDE}, got {value!r}")
    return value
