"""Reading a memory config file (``--memory FILE``, a preset, a reference EM-LLM YAML) into a mapping.

Every way a file can be unusable -- missing, not UTF-8, not YAML, empty, a list or a scalar where a
mapping of settings belongs -- ends in one line that names the file and says what to do, never a
multi-line parser dump or a traceback from inside PyYAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from memalign.datafiles import decode_utf8
from memalign.errors import ConfigError


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (``what`` names the kind of file in errors)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    text = decode_utf8(raw, f"{what} {str(path)!r}", "save it as UTF-8", error=ConfigError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML ({_yaml_problem(exc)})") from None
    if data is None:
        raise ConfigError(f"{what} {str(path)!r} is empty; write its settings as `key: value` lines")
    return require_mapping(data, f"{what} {str(path)!r}")


def require_mapping(data: Any, where: str) -> dict[str, Any]:
    """``data`` as a dict with string keys, or a one-line error naming ``where`` it came from."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of `key: value` settings, got a {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{where}: keys must be names, got {bad[0]!r} ({type(bad[0]).__name__})")
    return data
