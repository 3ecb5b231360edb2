"""Where and how the computation runs: the device and its memory (``device``), and changes to
Keras internals that make Keras on torch as fast and as lean as plain PyTorch: ``torch_speedups``
(convolution layout, fused BatchNorm), ``graph_memory`` (functional models free intermediates) and
``lazy_tensorflow`` (no TensorFlow import on the torch / jax backends).

The two that change how Keras computes (``torch_speedups``, ``graph_memory``) are installed only
where work starts: :func:`install_patches`, called by the entry points (``fit``, ``Predictor``, the
benchmarks), or for a block of code with :func:`patched`. Nothing installs them on import or when
a checkpoint is loaded. ``lazy_tensorflow`` changes no computation (it only keeps Keras from
importing TensorFlow to ask whether it is there); ``buildings.models`` installs it when it builds,
loads or saves a model, so the library API keeps TensorFlow out as the entry points do. All fall
back to plain Keras, with one logged line, where they were not verified (:func:`keras_outside`,
the one version gate)."""

from __future__ import annotations

import contextlib

__all__ = ["install_patches", "keras_outside", "patched"]


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


@contextlib.contextmanager
def patched():
    """Install the patches for a block (``with patched() as active: ...``) and remove, on the way
    out, those this block installed; what was installed before stays."""
    from buildings.runtime import graph_memory, torch_speedups

    before_speedups, before_memory = any(torch_speedups.installed().values()), graph_memory.installed()
    active = install_patches()
    try:
        yield active
    finally:
        if not before_speedups:
            torch_speedups.uninstall()
        if not before_memory:
            graph_memory.uninstall()
