"""Every tool is a module with a command line: ``python -m tools.<group>.<tool> --help`` answers."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.helpers import REPO

TOOLS = sorted(
    ".".join(path.relative_to(REPO).with_suffix("").parts)
    for path in (REPO / "tools").rglob("*.py")
    if "def main(" in path.read_text()
)


def test_every_group_holds_tools():
    groups = {name.split(".")[1] for name in TOOLS}
    assert groups == {"data", "bundle", "measure", "reproduce"} and len(TOOLS) >= 19


@pytest.mark.parametrize("name", TOOLS)
def test_each_tool_describes_its_command_line(name, capsys):
    module = importlib.import_module(name)
    with pytest.raises(SystemExit) as exit_code:
        module.main(["--help"])
    assert exit_code.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")
    assert 'if __name__ == "__main__":' in Path(module.__file__).read_text()  # runs as `python -m` too
