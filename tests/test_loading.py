"""load_model: GGUF round trip, local directories, tiny models, and every user-facing error path."""

from __future__ import annotations

import pytest
import torch

from memalign import load_model
from memalign.errors import ConfigError, ModelFileError, ModelNotFoundError, UnsupportedArchitectureError
from memalign.models import loading, placement
from memalign.testing import tiny_model, tiny_tokenizer, write_tiny_qwen3_gguf


def test_tiny_qwen3_gguf_roundtrip_logits_identical(tmp_path):
    path, reference = write_tiny_qwen3_gguf(tmp_path / "tiny-qwen3.gguf")
    model, tokenizer = load_model(str(path), dtype="fp32")
    assert model.config.model_type == "qwen3" and model.config.head_dim == 128
    ids = tokenizer("The pass key is 12345. Remember it.", return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 3
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    # The tokenizer came through GGUF metadata intact.
    assert tokenizer.decode(ids[0]) == "The pass key is 12345. Remember it."


def test_local_directory_roundtrip(tmp_path):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    loaded, tok = load_model(str(tmp_path / "m"), dtype="float32")
    ids = torch.tensor([[1, 5, 9, 42]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)
    assert tok.pad_token is not None


def test_auto_dtype_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(placement, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert load_model("tiny:qwen3")[0].dtype == torch.bfloat16
    monkeypatch.setattr(placement, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert load_model("tiny:qwen3")[0].dtype == torch.float32  # emulated bf16 is several times slower
    assert load_model("tiny:qwen3", dtype="bf16")[0].dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["./missing-model", "/nowhere/model.gguf", "a/b/c"])
def test_missing_paths_give_clear_error(name):
    with pytest.raises(ModelNotFoundError, match="not|does not exist"):
        load_model(name)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path))


def test_unreachable_hub_fails_fast_with_advice(monkeypatch):
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelNotFoundError, match="Hugging Face hub.*preset"):
        load_model("nonexistent-org/nonexistent-model-xyz")


def test_unsupported_architecture_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=512)).save_pretrained(tmp_path / "g")
    tiny_tokenizer().save_pretrained(tmp_path / "g")
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        load_model(str(tmp_path / "g"))


def test_bad_dtype():
    with pytest.raises(Exception, match="unknown dtype"):
        load_model("tiny:qwen3", dtype="int3")


def test_devices_are_parsed_and_checked():
    assert placement.resolve_device("cpu") == torch.device("cpu")
    assert placement.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="'meta' is not supported"):
        placement.resolve_device("meta")  # would load a model without weights
    with pytest.raises(ConfigError, match="unknown device 'cuda:x'"):
        placement.resolve_device("cuda:x")


def test_cuda_index_beyond_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert placement.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="'cuda:1' does not exist: 1 GPU"):
        placement.resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no usable GPU.*CUDA_VISIBLE_DEVICES"):
        placement.resolve_device("cuda")


def test_gguf_torch_cannot_map_is_a_model_file_error(tmp_path, monkeypatch):
    """A well-formed GGUF that transformers refuses (e.g. an architecture it lacks) names the file."""
    from transformers import AutoModelForCausalLM

    path, _ = write_tiny_qwen3_gguf(tmp_path / "odd.gguf")

    def refuse(*args, **kwargs):
        raise ValueError("GGUF model with architecture qwen9 is not supported yet.")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(ModelFileError, match=r"odd\.gguf.*qwen9"):
        load_model(str(path), dtype="fp32")
