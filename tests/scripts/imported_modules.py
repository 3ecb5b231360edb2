"""Child process of tests: import the modules named on the command line (or run ``buildings
ARGS...`` after ``--cli``) and print, as JSON, every module then in ``sys.modules`` — also after a
command that failed, whose one-line error goes to stderr as ``Error: ...``."""

from __future__ import annotations

import importlib
import json
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--cli":
        import click

        from buildings.cli import main

        try:
            main(args[1:], standalone_mode=False)
        except SystemExit:
            pass
        except click.ClickException as err:
            print(f"Error: {err.format_message()}", file=sys.stderr)
    else:
        for name in args:
            importlib.import_module(name)
    print(json.dumps(sorted(sys.modules)))
