"""Where and how the computation runs: the device and its memory (``device``), and changes to
Keras internals that make Keras on torch as fast and as lean as plain PyTorch: ``torch_speedups``
(convolution layout, fused BatchNorm), ``graph_memory`` (functional models free intermediates) and
``lazy_tensorflow`` (no TensorFlow import on the torch / jax backends). All are installed explicitly
where work starts — :func:`install_patches`, called by training, prediction and the benchmarks — and
all fall back to plain Keras, with one logged line, on Keras versions they were not verified against."""

from __future__ import annotations

__all__ = ["install_patches", "keras_outside"]


def keras_outside(verified: tuple[tuple[int, int], tuple[int, int]], what: str) -> str | None:
    """Why the installed Keras is outside ``verified`` ((low, high) as (major, minor)), or None;
    ``what`` names the patch in the reason ("it was", "they were")."""
    import keras

    try:
        major, minor = (int(part) for part in keras.__version__.split(".")[:2])
    except ValueError:
        major, minor = 0, 0
    low, high = verified
    if low <= (major, minor) <= high:
        return None
    return f"Keras {keras.__version__} is outside the versions {what} ({low[0]}.{low[1]} to {high[0]}.{high[1]})"


def install_patches() -> dict:
    """Install the Keras patches that apply here; returns which are active."""
    from buildings.runtime import graph_memory, lazy_tensorflow, torch_speedups

    torch_speedups.install()
    return {**torch_speedups.installed(), "free_intermediates": graph_memory.install(),
            "no_tensorflow_import": lazy_tensorflow.install()}
