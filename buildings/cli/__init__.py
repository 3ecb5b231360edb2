"""The ``buildings`` command line: one module a domain (``data``, ``train``, ``predict``,
``deploy``, ``score``), option sets declared once (``options``). Each command parses its options,
calls one library function and prints; the decisions (which post-processing applies, whether a
dataset is already built, where a resume starts) are the library's, tested there.

Importing this package imports click and the option modules only: no Keras, no inference or
training module (``tests`` checks it), so ``buildings --help`` answers at once.

Errors the user can fix (:class:`buildings.errors.BuildingsError` and its kinds) and operating-system
errors are printed as one ``Error: ...`` line (:func:`buildings.errors.one_line`: at most
``MESSAGE_LIMIT`` characters) with exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import click

import buildings
from buildings.cli import data, deploy, mapping, predict, score, train
from buildings.errors import BuildingsError, one_line

__all__ = ["main"]


class BuildingsGroup(click.Group):
    """A click group that prints the package's own errors, and operating-system errors (a full
    disk, a missing permission), as one ``Error:`` line with exit status 1. Anything else is a bug
    and keeps its traceback."""

    def invoke(self, ctx):
        from buildings.files import os_error_message

        try:
            return super().invoke(ctx)
        except BuildingsError as err:
            raise click.ClickException(one_line(str(err))) from None
        except OSError as err:
            raise click.ClickException(one_line(os_error_message(err))) from None


@click.group(cls=BuildingsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(buildings.__version__, prog_name="buildings")
def main():
    """Aerial images to building masks: Tianchi-style RLE submissions and scoring."""


for module in (score, data, train, predict, mapping, deploy):
    for command in module.COMMANDS:
        main.add_command(command)
