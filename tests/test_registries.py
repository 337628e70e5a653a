"""Every name -> entry table in memalign follows one set of rules: an unknown name is refused with the
list of known names, and registering a taken name (or alias) raises and leaves the table unchanged."""

from __future__ import annotations

import importlib
import re

import pytest

from memalign.errors import DuplicateNameError, UnknownNameError
from memalign.registry import Registry

# (what the table holds, module, attribute, function that fills a lazily filled table). The attribute is
# a preference: a module that holds exactly one Registry is accepted under any name, so renaming a table
# does not break this test.
REGISTRIES = [
    ("architectures", "memalign.models.arch", "ARCH_REGISTRY", None),
    ("presets", "memalign.models.presets", "PRESETS", None),
    ("tiny test models", "memalign.testing", "TINY_CONFIGS", None),
    ("boundary strategies", "memalign.memory.segmentation", "BOUNDARY_STRATEGIES", None),
    ("refinement metrics", "memalign.memory.refinement", "REFINEMENT_METRICS", None),
    ("bench tasks", "memalign.bench.tasks", "TASKS", "list_tasks"),
    ("bench metrics", "memalign.bench.metrics", "METRICS", None),
    ("bench methods", "memalign.bench.methods", "METHODS", None),
    ("persona modes", "memalign.persona.evaluation", "MODES", None),
    ("persona predictors", "memalign.persona.predictors", "PREDICTORS", None),
    ("memory presets", "memalign.memory.config", "EM_PRESETS", None),
    ("reference attention types", "memalign.compat", "ATTENTION_TYPES", None),
]
UNKNOWN = "no-such-name-xyz"
UNUSED = "a-name-no-registry-uses"


def _registry(module_name: str, attribute: str, fill: str | None) -> Registry:
    module = importlib.import_module(module_name)
    if fill is not None:
        getattr(module, fill)()
    preferred = getattr(module, attribute, None)
    if isinstance(preferred, Registry):
        return preferred
    found = {id(value): value for value in vars(module).values() if isinstance(value, Registry)}
    if len(found) == 1:
        return next(iter(found.values()))
    pytest.fail(
        f"{module_name} should hold its name table as one memalign.registry.Registry; "
        f"found {len(found)} (looked for {attribute})"
    )


@pytest.mark.parametrize(
    ("module_name", "attribute", "fill"), [r[1:] for r in REGISTRIES], ids=[r[0] for r in REGISTRIES]
)
def test_unknown_names_listed_and_duplicates_refused(module_name, attribute, fill):
    registry = _registry(module_name, attribute, fill)
    known = list(registry)
    assert known, f"{module_name}.{attribute} is empty"

    with pytest.raises(UnknownNameError) as err:
        registry[UNKNOWN]
    message = str(err.value)
    assert UNKNOWN in message and "known:" in message
    assert all(name in message for name in known), message
    assert registry.get(UNKNOWN) is None and UNKNOWN not in registry  # still a well-behaved Mapping

    before = list(registry.items())
    first = known[0]
    with pytest.raises(DuplicateNameError, match=re.escape(first)):
        registry.add(first, registry[first])
    with pytest.raises(DuplicateNameError, match=re.escape(first)):
        registry.add(UNUSED, registry[first], aliases=(first,))  # a taken name as an alias of a new entry
    assert list(registry.items()) == before and UNUSED not in registry
