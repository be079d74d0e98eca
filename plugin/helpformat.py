"""argparse help for every entry point (plugin.train, plugin.mine, main.py): `%` literal, types and defaults shown.

    .venv/bin/python -m plugin.train --help

Its own module so that the CLIs on top (cli.py, mine.py, main.py) share it without importing each other.
"""

from __future__ import annotations

import argparse


class FlagHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help texts as written (a `%` is literal), each flag's type, choices and default appended.

    argparse %-formats every help string, so a `%` in a description ("10% warmup")
    crashed --help; escaping here covers every entry point that uses this formatter.
    A help that names its default already ("(default: ...)", as the TrainConfig flags' do) gets no second one.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace("%", "%%")
        notes = _action_notes(action, with_default="default:" not in text)
        if not notes:
            return text
        head, own, tail = text.rpartition("(default:")
        if own and tail.endswith(")"):  # one parenthesis: "(int; default: the model's)"
            return f"{head}({'; '.join(notes)}; default:{tail}"
        return f"{text} ({'; '.join(notes)})".strip()


def _action_notes(action: argparse.Action, with_default: bool = True) -> list[str]:
    """"int", "one of: a, b", "required" / "default: 3" for a plain argparse flag."""
    if isinstance(action, argparse._SubParsersAction) or not action.option_strings:
        return []
    notes = []
    type_name = {int: "int", float: "float"}.get(action.type)  # type: ignore[arg-type]
    if type_name:
        notes.append(type_name)
    if action.choices:
        notes.append("one of: " + ", ".join(map(str, action.choices)))
    if action.required:
        notes.append("required")
    elif with_default and action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0:
        notes.append(f"default: {action.default}".replace("%", "%%"))
    return notes
