"""Every flag a hint or a help text tells the user to pass exists on the command that shows it.

The flags come from the real command line (the Typer app, introspected), not from a list kept here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer

import mltk
from mltk.cli.main import app
from mltk.core.artifact import provenance
from mltk.core.tensor_files import safetensors_bytes
from mltk.nn import build_model

PACKAGE = Path(mltk.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# "mltk quantize MODEL --arch NAME", "(mltk eval: --split)": a command line naming its command.
COMMAND_LINE = re.compile(r"mltk ([a-z][a-z-]*):?((?: +[^ `'\";,)]+)*)")
# The commands that read a dataset, so show the data readers' hints.
DATA_COMMANDS = ("train", "eval", "condense", "quantize")


def _options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        flags = {"--help"}  # click adds it outside the parameters
        for param in command.params:
            flags.update(opt for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--"))
        found[name] = flags
    return found


def _strings(path: Path) -> list[str]:
    """Every string the module can print: constants and the literal parts of f-strings."""
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_data_readers_hints_name_flags_every_data_command_has():
    # A flag inside "mltk CMD ..." belongs to that command (the next test checks it); any other flag a
    # data reader names may be shown by whichever command read the data.
    options = _options()
    named = {flag for path in (PACKAGE / "data").rglob("*.py") for text in _strings(path)
             for flag in FLAG.findall(COMMAND_LINE.sub("", text))}
    assert named, "the data readers name no flag at all: this test would check nothing"
    for command in DATA_COMMANDS:
        assert named <= options[command], f"mltk {command} lacks {sorted(named - options[command])}"


def test_command_lines_in_messages_use_the_named_commands_flags():
    options = _options()
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        for text in _strings(path):
            for match in COMMAND_LINE.finditer(text):
                command, rest = match.group(1), match.group(2)
                if command not in options or command == "eval":  # eval also takes each protocol's options
                    continue
                for flag in FLAG.findall(rest):
                    checked += 1
                    assert flag in options[command], f"{path.name}: 'mltk {command} ... {flag}': no such flag"
    assert checked, "no command line with a flag found: this test would check nothing"


@pytest.fixture
def small_weights(tmp_path) -> Path:
    model = build_model("convnet", num_classes=10, in_channels=3, image_size=32, width=4, depth=1)
    metadata = provenance(engine="supervised", parent="", relation="", arch=model.spec,
                          task={"data": {"name": "cifar10"}, "class_names": [str(i) for i in range(10)]})
    path = tmp_path / "small.safetensors"
    path.write_bytes(safetensors_bytes(model.state_dict(), metadata))
    return path


def test_the_missing_data_hint_of_every_data_command_names_only_its_own_flags(cli, small_weights, mltk_env):
    options = _options()
    command_lines = {
        "train": ["train", "supervised", "data=cifar10", "train.epochs=1"],
        "eval": ["eval", str(small_weights), "--data", "cifar10"],
        "condense": ["condense", "cifar10", "--ipc", "1"],
        "quantize": ["quantize", str(small_weights), "--data", "cifar10"],
    }
    for command, args in command_lines.items():
        result = cli(*args)
        assert result.code == 3, (command, result.stderr)
        assert "cannot find" in result.stderr, (command, result.stderr)
        named = set(FLAG.findall(result.stderr))
        assert {"--data-dir", "--download"} <= named
        assert named <= options[command], f"mltk {command}: {sorted(named - options[command])}"
