"""What the commands share: parameter types, option sets (declared once, applied by decorators),
the progress bar and stderr lines."""

from __future__ import annotations

import sys

import click

from buildings.contract import STRIDE
from buildings.tta import TTA_MODES

__all__ = ["DATA_DIR_HELP", "BatchSize", "FloatList", "ShapeType", "bar", "data_options", "given",
           "open_predictor", "parse_shape", "predictor_options", "rule_options", "say"]

DATA_DIR_HELP = "TFDS data_dir that --data names are looked up in [default: $TFDS_DATA_DIR or ~/tensorflow_datasets]."


def say(line: str) -> None:
    """A line for the person at the terminal (stderr): progress, provenance, advice."""
    click.echo(line, err=True)


def bar(length, label, unit="images"):
    """click's progress bar on a terminal; plain lines (every 5 %, with rate and ETA) in logs and CI."""
    if sys.stderr.isatty():
        return click.progressbar(length=length, label=label, file=sys.stderr)
    from buildings.progress import LineBar

    return LineBar(length, label, unit=unit, write=say)


def given(ctx: click.Context, *names: str) -> dict:
    """The options among ``names`` that the user gave on the command line, with their values."""
    from click.core import ParameterSource

    return {name: ctx.params[name] for name in names
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


# -- parameter types ------------------------------------------------------------------------------
def parse_shape(value: str) -> tuple[int, int]:
    """``512`` or ``512x512`` (height x width) → (512, 512), at most 16384x16384 pixels in all."""
    from buildings.formats.rle import MAX_PIXELS

    parts = value.lower().replace("*", "x").split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{value[:40]!r}: expected HEIGHTxWIDTH such as 512x512") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or min(numbers) < 1:
        raise click.BadParameter(f"{value[:40]!r}: expected HEIGHTxWIDTH such as 512x512")
    if numbers[0] * numbers[1] > MAX_PIXELS:
        raise click.BadParameter(f"{numbers[0]}x{numbers[1]} is more than the {MAX_PIXELS:,} pixels (16384x16384) "
                                 "a mask may have")
    return numbers[0], numbers[1]


class ShapeType(click.ParamType):
    name = "HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return parse_shape(value)
        except click.BadParameter as err:
            self.fail(str(err), param, ctx)


class FloatList(click.ParamType):
    """Comma-separated numbers: ``2,1`` → [2.0, 1.0]."""

    name = "NUMBERS"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return [float(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r}: expected comma-separated numbers such as 2,1", param, ctx)


class BatchSize(click.ParamType):
    """A positive number, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"{value!r}: expected a positive number or auto", param, ctx)
        return number


def open_predictor(ctx: click.Context, *, checkpoints, weights=None, vote=False, tta="none", tile=512,
                   overlap=128, batch_size="auto", postprocess_from="none", announce_rule=True, **_):
    """The predictor of the prediction options, with the rule that applies (the tuned one, the
    options given overriding it); says on stderr what is applied, once the checkpoints loaded (the
    rule only with ``announce_rule``: a command that searches the rule applies none)."""
    from buildings.inference import Predictor, resolve_rule

    rule_options = given(ctx, *(n for n in ("threshold", "min_area", "fill_holes") if n in ctx.params))
    rule, source = resolve_rule(checkpoints[0], postprocess_from, **rule_options)
    predictor = Predictor.from_checkpoints(checkpoints, tta=tta, weights=weights, vote=vote, rule=rule, tile=tile,
                                           overlap=overlap, batch_size=batch_size)
    if announce_rule:
        say(f"post-processing: {predictor.rule.describe()} (from {source})")
    say(predictor.describe())
    return predictor


def _apply(function, options):
    for option in reversed(options):
        function = option(function)
    return function


# -- option sets ----------------------------------------------------------------------------------
def data_options(function):
    """``--data`` and ``--data-dir``: which dataset."""
    return _apply(function, [
        click.option("--data", "data_", default="tianchi_buildings", show_default=True,
                     help="Dataset name (under --data-dir) or folder."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=DATA_DIR_HELP),
    ])


def predictor_options(function):
    """The checkpoints and how they predict: ensemble, TTA, tiling, batches."""
    return _apply(function, [
        click.option("--checkpoint", "checkpoints", multiple=True, required=True,
                     type=click.Path(dir_okay=False), metavar="MODEL",
                     help="A checkpoint: a .keras model, or a .onnx file `buildings export` wrote (run through "
                          "onnxruntime); repeat for an ensemble."),
        click.option("--weights", type=FloatList(), default=None,
                     help="Ensemble weights, comma-separated (default equal)."),
        click.option("--vote", is_flag=True, help="Ensemble by per-pixel majority vote instead of mean."),
        click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True,
                     help="Test-time augmentation (mean of probabilities); flip and d4 cost 3x and 8x the time."),
        click.option("--tile", type=click.IntRange(STRIDE), default=512, show_default=True,
                     help=f"Window side for larger images (multiple of {STRIDE})."),
        click.option("--overlap", type=click.IntRange(0), default=128, show_default=True,
                     help="Overlap of neighbouring windows, blended."),
        click.option("--batch-size", type=BatchSize(), default="auto", show_default=True,
                     help="Windows per model call; auto: as many as fit half the free GPU memory, or 2 GiB "
                          "on a CPU."),
    ])


def rule_options(function=None, *, threshold: bool = True, tuned: bool = True):
    """How probabilities become masks (``inference.prediction.MaskRule``): ``--threshold``,
    ``--min-area``, ``--fill-holes`` and ``--postprocess`` (the tuned rule they override).
    ``threshold=False`` where the command sweeps the threshold; ``tuned=False`` where no tuned rule
    applies."""
    if function is None:
        return lambda f: rule_options(f, threshold=threshold, tuned=tuned)
    return _apply(function, [
        *([click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
                        show_default=True, help="Probability from which a pixel is a building (binary "
                                                "models; `buildings tune` finds the best).")]
          if threshold else []),
        click.option("--min-area", type=click.IntRange(0), default=0, show_default=True,
                     help="Drop predicted buildings (4-connected) smaller than this many pixels."),
        click.option("--fill-holes", is_flag=True, help="Fill holes inside predicted buildings."),
        *([click.option("--postprocess", "postprocess_from", default="auto", show_default=True,
                        help="Tuned rule to apply: auto (the postprocess.json `buildings tune` wrote beside the "
                             "first checkpoint, if any), none, or a postprocess.json path; --threshold, "
                             "--min-area and --fill-holes given here override it.")]
          if tuned else []),
    ])
