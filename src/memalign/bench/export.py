"""Writing task records with their exact prompt token ids, so another tool (the kvpress peer, which
runs in its own environment with another transformers) answers the very same prompts."""

from __future__ import annotations

from pathlib import Path

from memalign.bench.prompts import encode
from memalign.bench.records import Record, write_records
from memalign.bench.tasks.base import TaskContext, get_task


def export_records(
    tasks: list[str],
    lengths: list[int],
    model: str,
    out: Path,
    *,
    samples: int = 5,
    seed: int = 0,
    haystack: Path | None = None,
    data_dir: Path | None = None,
    depths: tuple[float, ...] | None = None,
) -> int:
    """Records of every task x length, each with ``input_ids``, ``context_len`` and ``length`` added."""
    from transformers import AutoTokenizer

    from memalign.models.loading import resolve_source

    source, extra = resolve_source(model)
    if source.startswith("tiny:"):
        from memalign.testing import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in extra.items() if k == "gguf_file"})
    ctx = TaskContext(tokenizer, haystack_dir=haystack, data_dir=data_dir, depths=depths)
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
