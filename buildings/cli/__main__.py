"""``python -m buildings.cli``: the same as the ``buildings`` command."""

from buildings.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
