"""The README's commands are a contract: CI must run exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = _readme_commands()[1]
    assert test_command.endswith("pytest -q")
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_uses_a_packaged_preset():
    main_command = _readme_commands()[0]
    assert "memalign chat --model smollm2-135m-instruct" in main_command
