"""Real packaged model end to end (slow): calibration with its tokenizer, full attention finds a passkey."""

from __future__ import annotations

import pytest

from memalign import load_model
from memalign.bench.methods import FullAttention
from memalign.bench.prompts import count_tokens
from memalign.bench.runner import predict_one
from memalign.bench.tasks import TaskContext, get_task

pytestmark = pytest.mark.slow


def test_smollm2_passkey_1k_full_attention():
    model, tokenizer = load_model("smollm2-135m-instruct")
    record = get_task("passkey").records(TaskContext(tokenizer), 1024, 1, seed=0)[0]
    assert 1024 - 40 <= count_tokens(tokenizer, record) + record.max_new_tokens <= 1024
    row = predict_one(model, tokenizer, FullAttention(), record)
    assert row["score"] == 1.0, row["prediction"]
