"""``python -m buildings`` (and ``torchrun ... -m buildings fit ...``): the ``buildings`` command."""

from buildings.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
