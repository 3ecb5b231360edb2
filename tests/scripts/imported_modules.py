"""Child process of tests: import the modules named on the command line (or run ``buildings
ARGS...`` after ``--cli``) and print, as JSON, every module then in ``sys.modules``."""

from __future__ import annotations

import importlib
import json
import sys

if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--cli":
        from buildings.cli import main

        try:
            main(args[1:], standalone_mode=False)
        except SystemExit:
            pass
    else:
        for name in args:
            importlib.import_module(name)
    print(json.dumps(sorted(sys.modules)))
