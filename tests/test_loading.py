"""load_model: GGUF round trip, local directories, tiny models, and every user-facing error path."""

from __future__ import annotations

import pytest
import torch

from memalign import load_model
from memalign.errors import ModelNotFoundError, UnsupportedArchitectureError
from memalign.models import loading
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
    monkeypatch.setattr(loading, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert load_model("tiny:qwen3")[0].dtype == torch.bfloat16
    monkeypatch.setattr(loading, "_cpu_flags", lambda: frozenset({"avx2"}))
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
