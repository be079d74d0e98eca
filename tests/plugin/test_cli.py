"""`--help` of every entry point, run as a user runs it (a real subprocess), and what it lists.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/plugin/test_cli.py -q

COLUMNS is set wide so argparse puts each flag's help on one line and the checks can read it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.cli import TrainFlagsHelp, default_text, type_text
from plugin.config import TrainConfig
from plugin.manifest import GROUPS

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1"}
MAIN_COMMANDS = ["run-job", "train-job", "worker", "queue", "quickstart", "status", "stop", "serve"]
# "  --flag METAVAR   help" or, when the flag is long, "  --flag METAVAR" with the help on the next line.
FLAG_LINE = re.compile(r"^  (--\w[\w-]*)(?: [A-Z][\w.-]*)?(?:, --[\w-]+(?: [A-Z][\w.-]*)?)*(?:\s{2,}(.*))?$")


def run_help(*cmd: str) -> str:
    done = subprocess.run([*cmd, "--help"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:") and done.stderr == ""
    return done.stdout


def sections(text: str) -> dict[str, dict[str, str]]:
    """{"Data": {"--train_name_or_path": "help text", ...}, ...} from argparse's output."""
    out: dict[str, dict[str, str]] = {}
    current, flag = None, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = out.setdefault(line[:-1], {})
        elif current is not None and (m := FLAG_LINE.match(line)):
            flag = m.group(1)
            current[flag] = m.group(2) or ""
        elif current is not None and flag and line.startswith(" " * 8):  # the help of a long flag
            current[flag] = f"{current[flag]} {line.strip()}".strip()
    return out


def check_train_flags(text: str) -> None:
    """Every TrainConfig field is a flag in its manifest group, in the manifest's order, with type and default."""
    found = sections(text)
    groups = [g for g in found if g in GROUPS]
    assert groups == [g for g in GROUPS if any(f.json_schema_extra["group"] == g
                                               for f in TrainConfig.model_fields.values())]
    for name, field in TrainConfig.model_fields.items():
        help_text = found[field.json_schema_extra["group"]].get(f"--{name}")
        assert help_text is not None, f"--{name} is missing from its group"
        assert type_text(field.annotation) in help_text and default_text(field) in help_text, (name, help_text)


def test_plugin_train_help_lists_every_flag_by_group_with_type_choices_and_default() -> None:
    text = run_help(sys.executable, "-m", "plugin.train")
    check_train_flags(text)
    flags = sections(text)
    # The `%` that crashed --help is printed as written.
    assert "with 10% warmup" in flags["Training"]["--wise_alpha"]
    assert flags["Model & pooling"]["--pooling_strategy"].endswith("(one of: cls, cls_avg, mean, max, last; default: mean)")
    assert "(int; >= 8, <= 32768; default: 512)" in flags["Model & pooling"]["--maxlen"]
    assert flags["Data"]["--train_name_or_path"].endswith("(text; required)")
    assert "(comma-separated list of int; default: unset)" in flags["Matryoshka & Espresso"]["--matryoshka_dims"]
    assert "(bool: 1/0, true/false; default: false)" in flags["Training"]["--fp16"]


def test_the_console_script_and_main_py_train_print_the_same_help() -> None:
    script = Path(sys.executable).with_name("angle-lab-train")
    if not script.exists():
        pytest.skip(f"{script} is missing: the package is not installed (`pip install -e .`, which setup.sh runs)")
    expected = run_help(sys.executable, "-m", "plugin.train")
    assert run_help(str(script)) == expected
    assert run_help(sys.executable, "main.py", "train") == expected


def test_help_answers_without_importing_torch() -> None:
    # --help used to import the whole training stack first (~5 s on two cores) before parsing.
    code = ("import sys\nfrom plugin.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("usage: angle-lab-train") and done.stderr.strip() == "False"


def test_plugin_mine_help_shows_types_and_defaults() -> None:
    flags = sections(run_help(sys.executable, "-m", "plugin.mine"))["options"]
    assert flags["--input_file"].endswith("(required)") and flags["--output_file"].endswith("(required)")
    assert flags["--negative_number"].endswith("(int; default: 15)")
    assert flags["--batch_size"].endswith("(int; default: 256)")
    assert flags["--range_for_sampling"].endswith("(default: 10-210)")
    assert "cls, cls_avg, mean, max, last" in flags["--pooling_strategy"]


def test_main_py_help_lists_every_command() -> None:
    text = run_help(sys.executable, "main.py")
    listed = re.findall(r"^    (\S+)", text.split("commands:", 1)[1], flags=re.MULTILINE)
    assert listed[: len(MAIN_COMMANDS) + 1] == [*MAIN_COMMANDS, "train"]


@pytest.mark.parametrize("command", MAIN_COMMANDS)
def test_each_main_py_command_has_help_with_types_and_defaults(command: str) -> None:
    from main import build_parser

    text = run_help(sys.executable, "main.py", command)
    flags = sections(text)["options"]
    subparser = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    for action in subparser._actions:  # every flag the command parses is listed, an int flag as one
        if isinstance(action, argparse._HelpAction | TrainFlagsHelp):
            continue
        assert action.option_strings[0] in flags, (command, action.option_strings)
        if action.type is int:
            assert "int" in flags[action.option_strings[0]], (command, action.option_strings)
    if command in ("queue", "quickstart"):  # they pass TrainConfig flags through: listed too
        check_train_flags(text)
        assert flags["--launch"].startswith("JSON file with launch options")
    if command == "status":
        assert flags["--limit"].endswith("(int; default: 20)")
    if command == "serve":
        assert flags["--port"].endswith("(int; default: 8000)") and flags["--host"].endswith("(default: 127.0.0.1)")
    if command in ("run-job", "stop"):
        assert flags["--job_id"].endswith("(int; required)")
