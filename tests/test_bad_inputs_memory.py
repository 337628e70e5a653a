"""Bad input to episodic memory fails at construction or load with one clear ConfigError and leaves nothing
behind: every field of every memory config (wrong types, out-of-range values), broken YAML files (presets,
``--memory FILE``, reference EM-LLM configs) and every argument of the reference ``patch_hf``."""

from __future__ import annotations

import dataclasses
import math
import tempfile

import pytest
import torch

from memalign.compat import load_reference_config, patch_hf
from memalign.errors import ConfigError, MemalignError
from memalign.memory import EMConfig, EpisodicMemory
from memalign.memory.store import EventStore
from memalign.memory.store_config import StoreConfig
from memalign.memory.validate import MAX_TOKENS
from memalign.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAN, INF = math.nan, math.inf

# field -> bad values; every one must be refused by the constructor, naming the field.
EM_BAD: dict[str, list[object]] = {
    "n_init": [32.5, True, "32", -1, MAX_TOKENS + 1, None],
    "n_local": [1024.0, True, "1024", 0, 10**9, None],
    "n_mem": [64.5, False, "64", -1, 10**9],
    "chunk_size": [16.0, True, "16", 0, 10**9],
    "last_token_alone": [1, "yes", None],
    "min_block_size": [2.5, True, "8", 0, -3],
    "max_block_size": [128.0, True, "128", 0, 10**9],
    "repr_topk": [4.0, True, "4", 0, 10**9],
    "segmentation": ["sentence", 3, None],
    "gamma": [NAN, INF, -INF, -1.0, "1.0", True, None],
    "surprise_window": [1, 2.5, True, "100", 10**9],
    "boundary": ["middle", 1, None],
    "refinement": ["cut", 5],
    "refine_from_layer": [-1, 1.5, True, 2**40],
    "contiguity_fraction": [1.0, -0.1, NAN, INF, "0.3", True],
    "memory_distance": [-1, 1.5, True, 10**9],
    "seed": [-1, 1.5, True, "0", 2**64],
    "store": ["notadict", 5, [1, 2], {"nope": 1}, {"page_tokens": 0}],
}
STORE_BAD: dict[str, list[object]] = {
    "device_cache_tokens": [-1, 1.5, True, "4096", 10**9],
    "host_budget_bytes": [-1, 1.5, True, "1GB", 2**61],
    "offload_dir": [5, "", b"/tmp", ["/tmp"]],
    "pin_memory": [1, "yes", 0.0],
    "page_tokens": [0, -1, 1.5, True, None, "4096", 2**21],
    "repr_device_max_bytes": [-1, 2.5, False, "1"],
}


@pytest.fixture
def no_leftovers(tmp_path, monkeypatch):
    """Run in an empty folder that is also the temp dir; afterwards it must still be empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    yield work
    assert sorted(p.name for p in work.iterdir()) == []


def _expected_name(owner: str, field: str, value: object) -> str:
    if field == "store" and isinstance(value, dict):
        return "StoreConfig"
    return f"{owner}.{field}"


def test_every_config_field_has_bad_values():
    assert set(EM_BAD) == {f.name for f in dataclasses.fields(EMConfig)}
    assert set(STORE_BAD) == {f.name for f in dataclasses.fields(StoreConfig)}


@pytest.mark.parametrize("field,value", [(f, v) for f, values in EM_BAD.items() for v in values])
def test_em_config_refuses_bad_field(field, value, no_leftovers):
    with pytest.raises(ConfigError) as info:
        EMConfig(**{field: value})
    message = str(info.value)
    assert _expected_name("EMConfig", field, value) in message
    assert "\n" not in message


@pytest.mark.parametrize("field,value", [(f, v) for f, values in STORE_BAD.items() for v in values])
def test_store_config_refuses_bad_field(field, value, no_leftovers):
    with pytest.raises(ConfigError, match=f"StoreConfig.{field}"):
        StoreConfig(**{field: value})
    with pytest.raises(ConfigError, match=f"StoreConfig.{field}"):  # also through EMConfig's `store:` mapping
        EMConfig(store={field: value})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"chunk_size": 64, "n_local": 32}, "chunk_size"),
        ({"min_block_size": 16, "max_block_size": 8}, "min_block_size"),
        ({"n_mem": 8, "max_block_size": 16}, "smaller than one event"),
    ],
)
def test_impossible_combinations(kwargs, match, no_leftovers):
    with pytest.raises(ConfigError, match=match):
        EMConfig(**kwargs)


def test_replace_and_from_dict_refuse_like_the_constructor(no_leftovers):
    cfg = EMConfig(n_local=64, chunk_size=16, n_mem=64, max_block_size=16)
    with pytest.raises(ConfigError, match="EMConfig.n_local"):
        cfg.replace(n_local=64.5)
    with pytest.raises(ConfigError, match="unknown EMConfig field"):
        cfg.replace(n_locall=64)
    with pytest.raises(ConfigError, match="mapping"):
        EMConfig.from_dict(["n_local", 64])


def test_derived_defaults_follow_a_replaced_window():
    """A preset's memory distance is n_local - 1 of the window actually used, not of the preset's."""
    cfg = EMConfig.preset("small").replace(n_local=2048)
    assert cfg.memory_distance == 2047 and cfg.surprise_window == 2048 - cfg.chunk_size
    fixed = EMConfig(memory_distance=5, surprise_window=40).replace(n_local=8192)
    assert (fixed.memory_distance, fixed.surprise_window) == (5, 40)


# ---- bounds that need the model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3():
    return tiny_model("qwen3")  # max_position_embeddings = 4096


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"memory_distance": 4096}, "memory_distance"),
        ({"memory_distance": 10**6}, "memory_distance"),
        ({"n_local": 8192, "chunk_size": 512}, "n_local"),
        ({"n_init": 5000}, "n_init"),
    ],
)
def test_attach_refuses_what_the_model_cannot_place(qwen3, kwargs, field, no_leftovers):
    cfg = EMConfig(**{"n_local": 64, "chunk_size": 16, "n_mem": 64, "max_block_size": 16, "n_init": 4, **kwargs})
    with pytest.raises(ConfigError, match=f"EMConfig.{field}=.*max_position_embeddings"):
        EpisodicMemory(qwen3, cfg)
    assert qwen3.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("config", [42, ["n_local", 64], object()])
def test_memory_refuses_a_config_of_the_wrong_type(qwen3, config):
    with pytest.raises(ConfigError, match="EpisodicMemory config|mapping"):
        EpisodicMemory(qwen3, config)


def test_memory_refuses_unknown_overrides(qwen3):
    with pytest.raises(ConfigError, match="unknown EMConfig field"):
        EpisodicMemory(qwen3, None, n_locall=64)


def test_disk_budget_below_two_pages_creates_no_directory(no_leftovers):
    config = StoreConfig(host_budget_bytes=100, page_tokens=16)
    with pytest.raises(ConfigError, match="host_budget_bytes"):
        EventStore(2, 8, 32, torch.float32, torch.device("cpu"), config)


# ---- YAML files -------------------------------------------------------------------------------------

BAD_EM_YAML: dict[str, tuple[bytes, str]] = {
    "string-number": (b"n_local: '32'\n", "n_local"),
    "exponent-string": (b"n_local: 1e3\n", "n_local"),
    "bool-for-int": (b"n_local: true\n", "n_local"),
    "float-for-int": (b"n_local: 32.5\n", "n_local"),
    "nan": (b"gamma: .nan\n", "gamma"),
    "top-level-list": (b"- n_local\n- 32\n", "mapping"),
    "top-level-scalar": (b"42\n", "mapping"),
    "unknown-key": (b"n_local: 64\nn_locall: 5\n", "n_locall"),
    "invalid-yaml": (b"n_local: [1\n", "not valid YAML"),
    "tab-indent": (b"store:\n\thost_budget_bytes: 5\n", "not valid YAML"),
    "non-utf8": (b"n_local: 64\ncomment: \xff\xfe\n", "not UTF-8"),
    "empty": (b"", "empty"),
    "only-comments": (b"# nothing here\n", "empty"),
    "memory-not-mapping": (b"memory: 5\n", "memory"),
    "memory-with-siblings": (b"memory:\n  n_local: 64\nmodel: x\n", "model"),
    "store-not-mapping": (b"store: notadict\n", "store"),
    "store-unknown-key": (b"store:\n  host_budget: 5\n", "host_budget"),
    "store-float-budget": (b"store:\n  host_budget_bytes: 1.5e+9\n", "host_budget_bytes"),
    "non-string-key": (b"1: 2\n", "keys must be names"),
}


@pytest.mark.parametrize("name", list(BAD_EM_YAML))
def test_bad_memory_yaml_is_one_line_naming_file_and_key(name, tmp_path, monkeypatch):
    content, key = BAD_EM_YAML[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for load in (EMConfig.from_yaml, EMConfig.preset):  # `--memory FILE` goes through preset()
        with pytest.raises(ConfigError) as info:
            load(str(path))
        message = str(info.value)
        assert path.name in message and key in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_missing_memory_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="cannot read EM config .*missing.yaml"):
        EMConfig.preset(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="unknown EM preset 'smal'; known: .*small"):
        EMConfig.preset("smal")
    with pytest.raises(ConfigError, match="name or a YAML path"):
        EMConfig.preset(3)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"model: [1, 2]\n", "key model"),
        (b"- 1\n", "mapping"),
        (b"model:\n  n_local: 32\n  n_local: 64\n  bad: [\n", "not valid YAML"),
        (b"\xff", "not UTF-8"),
        (b"", "empty"),
    ],
)
def test_bad_reference_yaml(content, match, tmp_path):
    path = tmp_path / "reference.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_reference_config(path)
    assert "reference.yaml" in str(info.value) and "\n" not in str(info.value)


# ---- patch_hf -----------------------------------------------------------------------------------------

BASE = {"n_local": 32, "n_init": 4, "max_block_size": 16, "exc_block_size": 16}
BAD_PATCH_ARGS: list[tuple[dict[str, object], str]] = [
    ({"exc_block_size": 0}, "chunk_size"),
    ({"exc_block_size": -16}, "chunk_size"),
    ({"exc_block_size": 16.5}, "chunk_size"),
    ({"exc_block_size": True}, "chunk_size"),
    ({"exc_block_size": "16"}, "chunk_size"),
    ({"exc_block_size": 64}, "chunk_size"),
    ({"chunk_size": 8}, "exc_block_size=16 and chunk_size=8"),
    ({"n_local": 32.5}, "n_local"),
    ({"n_local": "32"}, "n_local"),
    ({"n_local": 0}, "n_local"),
    ({"n_local": 8192, "exc_block_size": 512}, "max_position_embeddings"),
    ({"n_init": -1}, "n_init"),
    ({"n_mem": 2.5}, "n_mem"),
    ({"n_mem": 8}, "smaller than one event"),
    ({"min_block_size": 0}, "min_block_size"),
    ({"max_block_size": 16.0}, "max_block_size"),
    ({"repr_topk": 0}, "repr_topk"),
    ({"surprisal_threshold_gamma": "1"}, "gamma"),
    ({"surprisal_threshold_gamma": NAN}, "gamma"),
    ({"uniform_blocks": "yes"}, "uniform_blocks"),
    ({"em_splitter": "sentence"}, "em_splitter"),
    ({"random_topk_blocks": True}, "random_topk_blocks"),
    ({"random_topk_blocks": 1}, "random_topk_blocks"),
    ({"similarity_refinement_kwargs": "on"}, "similarity_refinement_kwargs"),
    ({"similarity_refinement_kwargs": {"similarity_refinement": "yes"}}, "similarity_refinement"),
    ({"similarity_refinement": True, "similarity_metric": "cut"}, "similarity_metric"),
    ({"similarity_refinement": True, "refine_from_layer": -1}, "refine_from_layer"),
    ({"contiguity_buffer_kwargs": 0.3}, "contiguity_buffer_kwargs"),
    ({"use_contiguity_buffer": True, "contiguity_buffer_size": -1}, "contiguity_buffer_size"),
    ({"use_contiguity_buffer": True, "contiguity_buffer_size": 10**6}, "contiguity_buffer_size"),
    ({"use_contiguity_buffer": "yes"}, "use_contiguity_buffer"),
    ({"frobnicate": 1}, "unknown EM-LLM parameter"),
]


@pytest.mark.parametrize("changes,match", BAD_PATCH_ARGS)
def test_patch_hf_refuses_bad_arguments(qwen3, changes, match, no_leftovers):
    with pytest.raises(ConfigError, match=match):
        patch_hf(qwen3, attn_type="em_llm", **{**BASE, **changes})
    assert not hasattr(qwen3, "memalign_memory") and qwen3.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    "attn_type,match", [("landmark", "unknown attn_type 'landmark'; known: em_llm"), (5, "attn_type must be a string")]
)
def test_patch_hf_refuses_bad_attn_type(qwen3, attn_type, match):
    with pytest.raises(ConfigError, match=match):
        patch_hf(qwen3, attn_type=attn_type, **BASE)


def test_patch_hf_refuses_a_non_model():
    with pytest.raises(ConfigError, match="PreTrainedModel"):
        patch_hf("Qwen/Qwen3-8B", attn_type="em_llm")


def test_a_bad_patch_keeps_the_previous_patch(qwen3):
    patch_hf(qwen3, attn_type="em_llm", **BASE)
    try:
        previous = qwen3.memalign_memory
        with pytest.raises(MemalignError):
            patch_hf(qwen3, attn_type="em_llm", **{**BASE, "exc_block_size": 0})
        assert qwen3.memalign_memory is previous and previous.attached
    finally:
        from memalign.compat import unpatch_hf

        unpatch_hf(qwen3)
    assert qwen3.config._attn_implementation == "sdpa"
