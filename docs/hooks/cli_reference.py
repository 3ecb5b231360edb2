"""MkDocs hook: the command reference page, generated from the click commands at build time.

``reference/cli.md`` is not a file in ``docs/``: :func:`on_files` adds it to the build with the text
of :func:`reference_markdown`, which walks ``buildings.cli.main`` (every command and subgroup,
recursively) and writes for each its full command path, its help text, its arguments and every
option with its flags, type, default and help. A new command or option appears on the next build;
nothing here names one.

``tests/test_docs.py`` imports this file by its path and calls :func:`walk` and
:func:`reference_markdown`.
"""

from __future__ import annotations

import inspect
import re

import click

PAGE = "reference/cli.md"
ROOT_NAME = "buildings"

_CODE_SPAN = re.compile(r"(`[^`\n]*`)")


def walk(group: click.Command, name: str = ROOT_NAME, parent: click.Context | None = None):
    """Every visible command under ``group``, depth first, the group itself first.

    Yields ``(path, command, context)``: ``path`` the words typed (``"buildings data build"``),
    ``context`` a click context for the command (what ``get_params`` and the help need). Commands
    come from ``list_commands`` / ``get_command``, so lazily loaded subcommands are found too.
    """
    ctx = group.context_class(group, info_name=name, parent=parent, **group.context_settings)
    path = ctx.command_path
    yield path, group, ctx
    if isinstance(group, click.Group):
        for sub_name in group.list_commands(ctx):
            command = group.get_command(ctx, sub_name)
            if command is None or command.hidden:
                continue
            yield from walk(command, sub_name, ctx)


def visible_params(command: click.Command, ctx: click.Context) -> list[click.Parameter]:
    """The command's parameters as its ``--help`` shows them (hidden options left out)."""
    return [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]


def flags(param: click.Parameter) -> list[str]:
    """Every string that selects the option on the command line (``--vote``, ``-h``, ``--no-x``)."""
    return [*param.opts, *param.secondary_opts]


def _escape(text: str) -> str:
    """Markdown-safe prose: code spans kept as written, everything else escaped."""
    parts = _CODE_SPAN.split(text)
    for i in range(0, len(parts), 2):
        part = parts[i].replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts[i] = re.sub(r"([*_\[\]#|])", r"\\\1", part)
    return "".join(parts)


def _paragraphs(text: str) -> str:
    """A click help text as Markdown paragraphs (``\\f`` ends what click shows, ``\\b`` is dropped)."""
    text = inspect.cleandoc(text or "").split("\f", 1)[0]
    blocks = [" ".join(line.strip() for line in block.splitlines() if line.strip() != "\b")
              for block in re.split(r"\n\s*\n", text)]
    return "\n\n".join(_escape(block) for block in blocks if block)


def _is_unset(value) -> bool:
    return value is None or type(value).__name__ == "Sentinel" or value == () or value == []


def _range(t: click.types._NumberRangeBase) -> str:
    low = None if t.min is None else f"{t.min}{'<' if t.min_open else '<='}"
    high = None if t.max is None else f"{'<' if t.max_open else '<='}{t.max}"
    if low and high:
        return f"{low}x{high}"
    if low:
        return f"x{'>' if t.min_open else '>='}{t.min}"
    if high:
        return f"x{high}"
    return ""


def type_text(param: click.Parameter, ctx: click.Context) -> str:
    """What the value is: flag, a choice, a number range, a path kind, or the metavar it shows."""
    t = param.type
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        text = "flag"
    elif isinstance(t, click.Choice):
        text = "one of " + ", ".join(f"`{c}`" for c in t.choices)
    elif isinstance(t, (click.IntRange, click.FloatRange)):
        base = "integer" if isinstance(t, click.IntRange) else "number"
        text = f"{base} `{_range(t)}`" if _range(t) else base
    elif getattr(param, "metavar", None):
        text = f"`{param.metavar}`"
    else:
        text = _escape(t.name)
    if getattr(param, "multiple", False) or (isinstance(param, click.Argument) and param.nargs == -1):
        text += ", repeatable"
    if param.required:
        text += ", required"
    return text


def default_text(param: click.Parameter, ctx: click.Context) -> str:
    """The default as ``--help`` would state it; ``—`` when there is none."""
    shown = getattr(param, "show_default", None)
    if isinstance(shown, str):
        return _escape(shown)
    default = param.get_default(ctx, call=False)
    if callable(default):
        return "computed at run time"
    if getattr(param, "is_flag", False) and isinstance(default, bool):
        return "on" if default else "off"
    if _is_unset(default):
        return "—"
    if isinstance(default, (tuple, list)):
        return ", ".join(f"`{v}`" for v in default)
    return f"`{default}`"


def _usage(command: click.Command, ctx: click.Context) -> str:
    pieces = command.collect_usage_pieces(ctx)
    return " ".join([ctx.command_path, *pieces])


def command_section(path: str, command: click.Command, ctx: click.Context) -> str:
    """One command's section: heading, usage, help, arguments, options."""
    lines = [f"## `{path}`", "", f"```text\n{_usage(command, ctx)}\n```", ""]
    help_text = _paragraphs(command.help or command.short_help or "")
    if help_text:
        lines += [help_text, ""]
    if isinstance(command, click.Group):
        subs = [name for name in command.list_commands(ctx)
                if (sub := command.get_command(ctx, name)) is not None and not sub.hidden]
        if subs:
            lines += ["Subcommands: " + ", ".join(f"`{path} {name}`" for name in subs) + ".", ""]
    params = visible_params(command, ctx)
    arguments = [p for p in params if isinstance(p, click.Argument)]
    options = [p for p in params if not isinstance(p, click.Argument)]
    if arguments:
        lines += ["**Arguments**", ""]
        lines += [f"- `{p.make_metavar(ctx)}` ({type_text(p, ctx)})" for p in arguments]
        lines.append("")
    if options:
        lines += ["**Options**", "", "| Flags | Type | Default | Help |", "|---|---|---|---|"]
        for p in options:
            names = ", ".join(f"`{flag}`" for flag in flags(p))
            help_cell = _paragraphs(getattr(p, "help", None) or "").replace("\n\n", " ")
            lines.append(f"| {names} | {type_text(p, ctx)} | {default_text(p, ctx)} | {help_cell} |")
        lines.append("")
    return "\n".join(lines)


def reference_markdown(group: click.Command | None = None) -> str:
    """The whole page: every command of ``group`` (default ``buildings.cli.main``), depth first."""
    if group is None:
        from buildings.cli import main as group
    sections = [command_section(path, command, ctx) for path, command, ctx in walk(group)]
    head = ("# Command reference\n\n"
            "Generated when the site is built, from the click commands themselves "
            "(`docs/hooks/cli_reference.py` walks `buildings.cli.main`), so it lists exactly what "
            "`buildings ... --help` shows. Every command also takes `-h` / `--help`.\n")
    return "\n".join([head, *sections])


def on_files(files, config):
    """MkDocs event: add the generated page to the build."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=reference_markdown()))
    return files
