"""The documentation: a short README, a command reference that lists every command and option the
click group exposes, a site that builds in strict mode, and no reference to files outside the
repository."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from helpers import ROOT  # noqa: E402

DOCS = ROOT / "docs"
README = ROOT / "README.md"
HOOK = DOCS / "hooks" / "cli_reference.py"
README_LIMIT = 10240  # bytes


def _hook():
    spec = importlib.util.spec_from_file_location("docs_cli_reference", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exposed(command: click.Command, name: str = "buildings", parent=None):
    """(command path, flags) of every visible command, walked here independently of the hook."""
    ctx = command.make_context(name, [], parent=parent, resilient_parsing=True)
    flags = {flag for p in command.get_params(ctx) if not getattr(p, "hidden", False)
             for flag in (*p.opts, *p.secondary_opts) if flag.startswith("-")}
    found = {ctx.command_path: flags}
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                found.update(_exposed(child, sub, ctx))
    return found


def _sections(markdown: str) -> dict[str, str]:
    """The generated page cut at its command headings (``## `buildings data build` ``)."""
    parts = re.split(r"^## `([^`]+)`[ \t]*$", markdown, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_readme_is_at_most_10_kib():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; the limit is {README_LIMIT} (move detail into docs/)"


def test_cli_reference_lists_every_command_and_every_option():
    from buildings.cli import main

    exposed = _exposed(main)
    assert any(path.count(" ") >= 2 for path in exposed), "the walk found no subgroup command: it is broken"
    sections = _sections(_hook().reference_markdown(main))
    missing_commands = sorted(set(exposed) - set(sections))
    assert not missing_commands, f"commands missing from the generated reference: {missing_commands}"
    missing_flags = {path: sorted(flag for flag in flags if f"`{flag}`" not in sections[path])
                     for path, flags in exposed.items()}
    missing_flags = {path: flags for path, flags in missing_flags.items() if flags}
    assert not missing_flags, f"options missing from the generated reference: {missing_flags}"


def test_mkdocs_build_strict_succeeds(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                             "--config-file", str(ROOT / "mkdocs.yml")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}{result.stderr[-5000:]}"
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file(), "no generated command reference"
    assert (tmp_path / "site" / "results" / "index.html").is_file(), "no measured-results page"


# Absolute paths into the file system (not URL paths such as /predict or http://host/x), and the
# repository's own absolute location.
_ABSOLUTE = re.compile(r"(?<![\w.~$:/}\-])/(?:work|home|root|tmp|mnt|opt|srv|data|scratch|usr|var|etc|Users)/[^\s`'\")\]]*")
_PARENT = re.compile(r"(?<![\w.])((?:\.\./)+[^\s`'\")\]]*)")


def _outside_references(path: Path, text: str) -> list[str]:
    found = [m.group(0) for m in _ABSOLUTE.finditer(text)]
    found += [str(ROOT.parent)] * text.count(str(ROOT.parent) + "/")
    for m in _PARENT.finditer(text):
        target = (path.parent / m.group(1)).resolve()
        if target != ROOT and ROOT not in target.parents:
            found.append(m.group(1))
    if "../shared" in text:
        found.append("../shared")
    return found


def _documentation_files() -> list[Path]:
    files = [README, *sorted(p for p in DOCS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    return files + [ROOT / "mkdocs.yml", ROOT / "ARCHITECTURE.md"]


def test_docs_and_readme_refer_to_nothing_outside_the_repository():
    offenders = {}
    for path in _documentation_files():
        found = _outside_references(path, path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(set(found))
    assert not offenders, f"references to files outside the repository: {offenders}"


def test_files_the_site_includes_refer_to_no_sibling_folder():
    """Repository files included into pages (``--8<-- "experiments/RESULTS.md"``) become site text:
    no ``../`` path out of the repository in them either. (Absolute scratch folders in the recorded
    commands of RESULTS.md are what was run, and stay.)"""
    included = {ROOT / m.group(1) for path in DOCS.rglob("*.md")
                for m in re.finditer(r'--8<--\s+"([^"]+)"', path.read_text(encoding="utf-8"))}
    assert ROOT / "experiments" / "RESULTS.md" in included, "the results page no longer includes RESULTS.md"
    offenders = {}
    for path in sorted(included):
        text = path.read_text(encoding="utf-8")
        found = [ref for ref in _outside_references(path, text) if ref.startswith("..")]
        if found:
            offenders[str(path.relative_to(ROOT))] = sorted(set(found))
    assert not offenders, f"included files refer to folders outside the repository: {offenders}"


def test_the_outside_reference_check_catches_both_kinds():
    """The check above is not vacuous: it flags a ../ path leaving the repository and an absolute one."""
    assert _outside_references(README, "see ../shared/data/x")
    assert _outside_references(DOCS / "guide" / "x.md", "run /home/me/tools/x.sh")
    assert not _outside_references(DOCS / "guide" / "x.md", "[f](../formats.md) GET /predict http://127.0.0.1:8000/x")
