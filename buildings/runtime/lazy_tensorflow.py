"""Keep TensorFlow out of torch and jax processes.

Keras asks "is TensorFlow installed?" by importing it, in two places every training run reaches:
``keras.utils.set_random_seed`` (to seed ``tf.random``) and ``model.save`` (to check whether each
config value is a ``tf.TensorShape``). With TensorFlow installed (the ``tf`` extra, for ``tfds
build``), every torch ``fit`` then pays seconds, hundreds of MB and a screen of oneDNN / absl lines
for a library it never uses. Both questions have the same answer without the import: an object cannot
be a TensorFlow object, and TensorFlow's random state cannot matter, unless TensorFlow is already
imported. :func:`install` gives those two modules a stand-in whose ``available`` says exactly that
and which forwards everything else to Keras's own lazy module.

Guarded by structure rather than version: it installs only where those modules hold Keras's
``LazyModule`` for ``tensorflow`` (Keras 3.x as of 3.15), and otherwise leaves Keras as it is with
one logged line. Not installed on the tensorflow backend, where the import is wanted.
"""

from __future__ import annotations

import importlib
import logging
import sys

__all__ = ["PATCHED_MODULES", "install", "installed"]

log = logging.getLogger(__name__)
PATCHED_MODULES = ("keras.src.saving.serialization_lib", "keras.src.utils.rng_utils")


class ImportedOnly:
    """Keras's lazy ``tensorflow`` module, but ``available`` only once TensorFlow is imported."""

    def __init__(self, lazy):
        self._lazy = lazy

    @property
    def available(self) -> bool:
        return "tensorflow" in sys.modules and self._lazy.available

    def __getattr__(self, name):
        return getattr(self._lazy, name)


def installed() -> bool:
    return all(isinstance(getattr(sys.modules.get(name), "tf", None), ImportedOnly) for name in PATCHED_MODULES)


def install() -> bool:
    """Install the stand-in (not on the tensorflow backend); returns whether it is active."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return False
    try:
        from keras.src.utils.module_utils import LazyModule

        modules = [importlib.import_module(name) for name in PATCHED_MODULES]
    except ImportError as err:
        log.warning("buildings: Keras may import TensorFlow when saving or seeding (%s)", err)
        return False
    for module in modules:
        current = getattr(module, "tf", None)
        if isinstance(current, ImportedOnly):
            continue
        if not (isinstance(current, LazyModule) and current.name == "tensorflow"):
            log.warning("buildings: Keras may import TensorFlow when saving or seeding (%s.tf is %r)",
                        module.__name__, current)
            return False
        module.tf = ImportedOnly(current)
    return True
