"""Child process of tests: import the modules named on the command line (or run ``buildings
ARGS...`` after ``--cli``) and print, as JSON, every module then in ``sys.modules`` — also after a
command that failed, whose one-line error goes to stderr as ``Error: ...``. A leading
``--without a,b`` makes those modules uninstalled first (``sys.modules[name] = None``: importing
them fails, ``importlib.util.find_spec`` finds nothing); they are not listed."""

from __future__ import annotations

import importlib
import json
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--without"]:
        for name in args[1].split(","):
            sys.modules[name] = None
        args = args[2:]
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
    print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))
