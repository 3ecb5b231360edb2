"""MkDocs hook: pages include repository files by their path from the repository root.

A page writes ``--8<-- "experiments/RESULTS.md"`` (pymdownx.snippets) and the build puts that
file's text there, so the site shows the file as it is in the checkout and cannot drift from it.
Snippets resolves paths against the directory mkdocs was started in; this hook points it at the
directory holding ``mkdocs.yml`` (the repository root) instead, so the build works from anywhere.
``check_paths`` (in mkdocs.yml) makes a missing file fail the build, and snippets refuses paths
outside its base, so nothing outside the repository can be included.
"""

from __future__ import annotations

from pathlib import Path


def on_config(config):
    """MkDocs event: resolve snippet paths against the repository root."""
    root = Path(config.config_file_path).resolve().parent
    options = config.mdx_configs.setdefault("pymdownx.snippets", {})
    options["base_path"] = [str(root)]
    return config
