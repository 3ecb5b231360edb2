"""Where and how the computation runs: the device and its memory (``device``), and two changes to
Keras internals that make Keras on torch as fast and as lean as plain PyTorch: ``torch_speedups``
(convolution layout, fused BatchNorm) and ``graph_memory`` (functional models free intermediates).
Both are installed explicitly where work starts — :func:`install_patches`, called by training,
prediction and the benchmarks — and both fall back to plain Keras, with one logged line, on Keras
versions they were not verified against."""

from __future__ import annotations

__all__ = ["install_patches"]


def install_patches() -> dict:
    """Install the Keras patches that apply here; returns which are active."""
    from buildings.runtime import graph_memory, torch_speedups

    torch_speedups.install()
    return {**torch_speedups.installed(), "free_intermediates": graph_memory.install()}
