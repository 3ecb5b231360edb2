"""Named recipes (``buildings fit --config NAME``) and the defaults that follow the machine.

A recipe is a JSON file in this folder: ``options`` (``buildings fit`` options by their
``FitConfig`` names), a ``comment`` saying what they were measured or reasoned on, and the commands
to run ``after``. Two ship:

* ``cpu-quick``: a 2-core CPU and about 20 minutes of training (measured on barnarp);
* ``tianchi-gpu``: one GPU and about 3 hours for the contest (reasoned, see its comment).

**Defaults that follow the machine** (:func:`device_defaults`): the options a ``buildings fit``
call does not give — by a flag, a ``--config`` file or the run being resumed — come from the recipe
of the machine it runs on (``cpu-quick`` without an accelerator, ``tianchi-gpu`` with one), then
from ``FitConfig``'s own defaults for what the recipe does not set. Only what fits the
architecture is taken: the recipe's encoder for a model that takes one, its weights and freezing
only with that encoder, and its model options the architecture has when none are given; its fold layout
never (a run layout, not a machine default), nor its loss (the dataset's task chooses it). The line
:func:`describe_filled` makes says what was filled, and the run's config.json records it
(``device_defaults``). ``buildings fit --no-machine-defaults`` (or ``BUILDINGS_MACHINE_DEFAULTS=0``)
fills nothing: the built-in defaults, the same on every machine.

Reading a recipe imports nothing heavy; :func:`device_defaults` imports ``buildings.models`` (Keras) to
know what an architecture takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from buildings.errors import ConfigError

__all__ = ["DEVICE_RECIPES", "RECIPES", "Filled", "describe_filled", "device_defaults", "load_recipe", "recipe_file"]

HERE = Path(__file__).parent
RECIPES = {path.stem: path for path in sorted(HERE.glob("*.json"))}
# The recipe whose options fill what a run does not give: by whether an accelerator is visible.
DEVICE_RECIPES = {False: "cpu-quick", True: "tianchi-gpu"}
# A run's layout and data, never a machine's; nor the loss, which the dataset's task decides (a
# binary recipe's loss refused on a multi-class dataset; without it each task takes its own default).
NOT_DEFAULTS = ("folds", "fold", "run_dir", "data", "data_dir", "loss")
ENCODER_OPTIONS = ("encoder_weights", "freeze_encoder_epochs")  # taken only with the recipe's encoder


def recipe_file(name_or_path) -> Path:
    """The file of recipe ``name_or_path``: a shipped recipe's name (``cpu-quick``) or a JSON file."""
    text = str(name_or_path)
    if text in RECIPES:
        return RECIPES[text]
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"--config {text}: a folder, not a JSON file of options")
    raise ConfigError(f"--config {text}: no such file, and not a recipe name ({', '.join(RECIPES)})")


def load_recipe(name: str) -> dict:
    """The ``options`` of shipped recipe ``name``."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dict(json.loads(RECIPES[name].read_text())["options"])


@dataclass(frozen=True)
class Filled:
    """What :func:`device_defaults` filled: the recipe's name, whether the machine has an
    accelerator, and the options taken from it (``FitConfig`` names → values)."""

    recipe: str
    accelerator: bool
    options: dict

    def record(self) -> dict:
        """For the run's config.json (``FitConfig.device_defaults``)."""
        return {"recipe": self.recipe, "accelerator": self.accelerator, "filled": dict(self.options)}


def device_defaults(given: dict, *, accelerator: bool) -> Filled:
    """The options to fill under ``given`` (the options a call gives, ``FitConfig`` names → values,
    ``model_options`` a dict of the model options given) from the machine's recipe: see the module
    docstring for what fits an architecture."""
    from buildings.config import FitConfig

    name = DEVICE_RECIPES[bool(accelerator)]
    recipe = load_recipe(name)
    takes = _model_parameters(given.get("model", recipe.get("model", FitConfig.model)))
    filled = {key: value for key, value in recipe.items()
              if key not in given and key not in (*NOT_DEFAULTS, "encoder", *ENCODER_OPTIONS, "model_options")}
    if "encoder" in takes and "encoder" in recipe:
        if "encoder" not in given:
            filled["encoder"] = recipe["encoder"]
        if given.get("encoder", recipe["encoder"]) == recipe["encoder"]:  # its weights and freezing with it only
            filled.update({key: recipe[key] for key in ENCODER_OPTIONS if key in recipe and key not in given})
    options = {key: value for key, value in recipe.get("model_options", {}).items() if key in takes}
    if options and not given.get("model_options"):  # model options given are all there is of them
        filled["model_options"] = options
    return Filled(name, bool(accelerator), filled)


def _model_parameters(model: str) -> set:
    """The options architecture ``model`` takes (``buildings.models.model_options``, its one home)."""
    from buildings.config import ARCHITECTURES

    if model not in ARCHITECTURES:
        return set()  # FitConfig.check refuses it, naming the choices
    from buildings.models import model_options

    return set(model_options(model, internal=False))


def describe_filled(record: dict) -> str:
    """One line from a :meth:`Filled.record`: which machine, which recipe, and the options it filled
    as the flags that override them."""
    machine = "a GPU is visible" if record["accelerator"] else "no GPU"
    if not record["filled"]:
        return f"{machine}: every option was given (the {record['recipe']} recipe filled nothing)"
    flags = []
    first = [k for k in ("model", "encoder", "encoder_weights", "image_size", "batch_size", "epochs", "max_minutes")
             if k in record["filled"]]
    for key, value in sorted(record["filled"].items(), key=lambda item: (item[0] not in first, first.index(item[0])
                                                                          if item[0] in first else 0)):
        if key == "model_options":
            flags += [f"--model-option {k}={v}" for k, v in value.items()]
        else:
            flags.append(f"--{key.replace('_', '-')} {value}")
    return (f"{machine}: the {record['recipe']} recipe fills the options not given: {' '.join(flags)} "
            f"(give any of them to override it)")

