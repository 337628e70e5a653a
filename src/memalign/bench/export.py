"""Writing task records with their exact prompt token ids, so another tool (the kvpress peer, which
runs in its own environment with another transformers) answers the very same prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memalign.bench.prompts import encode
from memalign.bench.records import Record, write_records
from memalign.bench.runner import SweepSpec
from memalign.bench.tasks.base import TaskContext, get_task


def export_records(tasks: list[str], lengths: list[int], model: str, out: Path, **options: Any) -> int:
    """Records of every task x length, each with ``input_ids``, ``context_len`` and ``length`` added;
    ``options`` are :class:`~memalign.bench.runner.SweepSpec`'s that make records (samples, seed, haystack,
    data_dir, depths)."""
    spec = SweepSpec(tasks, lengths, (), model, out, **options)  # an unknown option fails before the tokenizer loads
    samples, seed = spec.samples, spec.seed
    from transformers import AutoTokenizer

    from memalign.models.loading import resolve_source

    source, extra = resolve_source(model)
    if source.startswith("tiny:"):
        from memalign.testing import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in extra.items() if k == "gguf_file"})
    ctx = TaskContext(tokenizer, haystack_dir=spec.haystack, data_dir=spec.data_dir, depths=spec.depths)
    records: list[Record] = []
    extras = []
    for task in tasks:
        for length in lengths:
            for record in get_task(task).records(ctx, length, samples, seed):
                prompt = encode(tokenizer, record)
                records.append(record)
                extras.append(
                    {
                        "input_ids": prompt.input_ids,
                        "context_len": prompt.context_len,
                        "length": length,
                        "seed": seed,
                        "model": model,
                    }
                )
    write_records(out, records, extras)
    return len(records)
