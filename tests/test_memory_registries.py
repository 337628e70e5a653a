"""Boundary strategies, refinement metrics, EM presets and reference attention types are registries: an
unknown name lists the known ones, a second registration under a taken name fails."""

from __future__ import annotations

import pytest
import torch

from memalign.compat import ATTENTION_TYPES
from memalign.errors import ConfigError, DuplicateNameError, UnknownNameError
from memalign.memory import EMConfig, em_presets
from memalign.memory.config import EM_PRESETS
from memalign.memory.refinement import REFINEMENT_METRICS, RefinementMetric, refine_boundary
from memalign.memory.segmentation import BOUNDARY_STRATEGIES, register_boundary
from memalign.registry import Registry


@pytest.mark.parametrize(
    "registry,names",
    [
        (BOUNDARY_STRATEGIES, ["surprise", "uniform", "random"]),
        (REFINEMENT_METRICS, ["modularity", "conductance"]),
        (ATTENTION_TYPES, ["em_llm", "inf_llm", "stream_llm"]),
    ],
)
def test_registries_list_their_entries_and_refuse_unknown_names(registry, names):
    assert isinstance(registry, Registry) and list(registry) == names
    with pytest.raises(UnknownNameError, match=f"known: {', '.join(names)}"):
        registry["nope"]


def test_presets_are_a_registry_of_the_packaged_files():
    assert isinstance(EM_PRESETS, Registry)
    assert em_presets() == sorted(EM_PRESETS) and {"small", "qwen3", "mistral"} <= set(em_presets())
    assert all(path.is_file() for path in EM_PRESETS.values())


def test_duplicate_registrations_raise():
    with pytest.raises(DuplicateNameError):
        register_boundary("uniform")(lambda ctx: torch.zeros(0, dtype=torch.bool))
    with pytest.raises(DuplicateNameError):
        REFINEMENT_METRICS.add("modularity", RefinementMetric(lambda adj, t: t.float(), maximise=True))
    assert BOUNDARY_STRATEGIES["surprise"].needs_surprise and not BOUNDARY_STRATEGIES["uniform"].needs_surprise


def test_config_names_the_field_of_an_unknown_strategy_or_metric():
    with pytest.raises(ConfigError, match="EMConfig.segmentation: unknown boundary strategy 'sentence'; known: "):
        EMConfig(segmentation="sentence")
    with pytest.raises(ConfigError, match="EMConfig.refinement: unknown refinement metric 'cut'; known: "):
        EMConfig(refinement="cut")


def test_reference_attention_type_spellings_resolve():
    for spelling in ("em_llm", "EM-LLM", "emllm", "inf-llm", "InfLLM", "stream_llm", "streaming"):
        assert ATTENTION_TYPES.resolve(spelling) in ("em_llm", "inf_llm", "stream_llm")


def test_refinement_looks_up_its_metric_by_name():
    adj = torch.ones(8, 8)
    adj[:4, 4:] = adj[4:, :4] = 0.0
    assert refine_boundary(adj, 1, 7, "modularity") == 4
    assert refine_boundary(adj, 1, 7, "conductance") == 4
