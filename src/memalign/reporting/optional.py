"""Importing the ``eval`` extra's packages (scipy, matplotlib) where they are used, and only there.

They are heavy to import and not needed to run a model, so memalign does not depend on them; a report
that needs one says which extra to install instead of failing with a bare ImportError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from memalign.errors import MissingExtraError


def import_extra(module: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or a :class:`MissingExtraError` naming ``purpose`` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise MissingExtraError(
            f"{purpose} needs {package}: install memalign[eval] (pip install 'memalign[eval]')"
        ) from None
