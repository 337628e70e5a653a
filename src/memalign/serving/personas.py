"""The personas a server offers: every steering directory (from ``memalign persona align``) under one folder."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from transformers import PreTrainedModel

from memalign.errors import ConfigError, DataError
from memalign.persona.artifact import META_FILE, TENSORS_FILE, load_steering
from memalign.persona.steering import Steering

logger = logging.getLogger(__name__)

# A persona is also addressed as ``model="M:NAME"``: the name must survive that and a URL unchanged.
PERSONA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def load_personas(directory: str | Path | None, model: PreTrainedModel, strict: bool = True) -> dict[str, Steering]:
    """``{folder name: steering}`` for every steering directory directly under ``directory``, checked against
    ``model`` (dims, type and, with ``strict``, the weights fingerprint). None gives no personas."""
    if directory is None:
        return {}
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(
            f"--personas {root}: not a directory; point it at a folder of steering directories "
            "written by `memalign persona align --out`"
        )
    personas: dict[str, Steering] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not ((folder / META_FILE).is_file() and (folder / TENSORS_FILE).is_file()):
            logger.info("skipping %s: not a steering directory", folder)
            continue
        if not PERSONA_NAME.match(folder.name):
            raise DataError(f"{folder}: a persona folder name may hold only letters, digits, '.', '_' and '-'")
        personas[folder.name] = load_steering(folder, model, strict=strict)
    if not personas:
        raise ConfigError(
            f"--personas {root}: no steering directories inside (each needs {META_FILE} and {TENSORS_FILE})"
        )
    return personas
