"""Make Keras's own loader know this package's layers, losses and metrics.

``keras.saving.load_model`` finds a custom class only if it was registered (``@keras.saving.
register_keras_serializable``) before loading, which happens when the module defining it is
imported. keras-hub does that on ``import keras_hub`` by importing all of itself; this package
keeps ``import buildings`` cheap instead (the RLE and scoring tools never load a deep-learning
framework), so it registers **when Keras is imported**:

* if Keras is already imported when ``buildings`` is, the modules holding serialisables are
  imported at once;
* otherwise a one-shot import hook (a ``sys.meta_path`` finder that removes itself on first use)
  waits for ``import keras`` and imports them right after Keras has finished loading.

Either way, ``import buildings`` followed by ``keras.saving.load_model(path)`` loads any checkpoint
this package wrote, compiled or not, on any backend, at the cost of importing three small modules
when Keras itself is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["SERIALIZABLE_MODULES", "register_keras_objects", "register_when_keras_loads"]

# The modules whose import registers every Keras object the package saves in a checkpoint.
SERIALIZABLE_MODULES = ("buildings.models.layers", "buildings.losses", "buildings.metrics")


def register_keras_objects() -> None:
    """Import the modules that register this package's Keras serialisables (idempotent)."""
    for name in SERIALIZABLE_MODULES:
        importlib.import_module(name)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first ``import keras`` it lets the usual finders locate Keras,
    and wraps the loader so that registration runs once Keras's module has executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        _remove_hook()
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            try:
                register_keras_objects()
            except Exception as err:  # never break `import keras` for the user
                warnings.warn(f"buildings could not register its Keras objects: {err!r}", stacklevel=2)

        spec.loader.exec_module = exec_module
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _AfterKerasImport)]


def register_when_keras_loads() -> None:
    """Register now if Keras is imported, else as soon as it is (see the module docstring)."""
    if "keras" in sys.modules:
        register_keras_objects()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
