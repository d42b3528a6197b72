"""Command descriptions as paragraphs the terminal wraps.

Typer keeps a docstring's line breaks inside a paragraph, so at a width narrower than the
source lines each one broke early and left a word or two alone on a line. The docstrings
stay readable in the source; the CLI is given each paragraph as one line.
"""

from __future__ import annotations

import inspect

import typer


def reflow(text: str) -> str:
    """``text`` (a docstring) with each paragraph on one line; a paragraph starting with
    ``\\b`` (click's "keep as written") and what follows ``\\f`` stay as they are."""
    shown, mark, hidden = inspect.cleandoc(text).partition("\f")
    paragraphs = [
        paragraph if paragraph.startswith("\b") else " ".join(paragraph.split())
        for paragraph in shown.split("\n\n")
    ]
    return "\n\n".join(paragraphs) + mark + hidden


def reflow_help(app: typer.Typer) -> None:
    """Reflow the description of every command and group of ``app``, sub-apps included."""
    for command in app.registered_commands:
        text = command.help or inspect.getdoc(command.callback)
        if text:
            command.help = reflow(text)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)
            info = group.typer_instance.info
            if isinstance(info.help, str):
                info.help = reflow(info.help)
        if isinstance(group.help, str):
            group.help = reflow(group.help)
