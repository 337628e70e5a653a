"""Passkey retrieval through episodic memory vs plain attention on a real model.

A 5-digit passkey is hidden at several depths of ~N tokens of Paul Graham essays (the usual haystack);
the model is asked for it. With memory on and ``n_local`` far below N, the key can only be reached
through retrieved events.

    python benchmarks/em_passkey_check.py --model qwen2.5-coder-0.5b-instruct --tokens 16000 \
        --depths 0.1,0.5,0.9 --n-local 2048 --n-mem 2048 [--full]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from memalign import load_model
from memalign.chat_format import chat_input_ids, single_turn
from memalign.memory import EMConfig, EpisodicMemory

DEFAULT_HAYSTACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "haystack" / "paul_graham"


def haystack_ids(tokenizer, folder: Path, n_tokens: int) -> list[int]:
    text = "\n\n".join(p.read_text() for p in sorted(folder.glob("*.txt")))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(ids) < n_tokens:
        ids = ids + ids
    return ids[:n_tokens]


def passkey_prompt(tokenizer, filler: list[int], depth: float, key: int) -> torch.Tensor:
    needle = tokenizer(f" The pass key is {key}. Remember it. {key} is the pass key. ", add_special_tokens=False)[
        "input_ids"
    ]
    at = int(len(filler) * depth)
    context = tokenizer.decode(filler[:at] + needle + filler[at:])
    question = (
        "There is an important piece of information hidden inside a lot of irrelevant text. "
        "Find it and memorize it.\n\n" + context + "\n\nWhat is the pass key? The pass key is"
    )
    return torch.tensor([chat_input_ids(tokenizer, single_turn(question))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tokens", type=int, default=16000)
    ap.add_argument("--depths", default="0.1,0.5,0.9")
    ap.add_argument("--n-local", type=int, default=2048)
    ap.add_argument("--n-mem", type=int, default=2048)
    ap.add_argument("--n-init", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--segmentation", default="surprise")
    ap.add_argument("--full", action="store_true", help="also run unmodified attention")
    ap.add_argument("--haystack", type=Path, default=DEFAULT_HAYSTACK)
    ap.add_argument("--dtype", default="auto", help="auto: fp32 on CPUs without native bf16 (7x faster there)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    filler = haystack_ids(tokenizer, args.haystack, args.tokens)
    cfg = EMConfig(
        n_init=args.n_init,
        n_local=args.n_local,
        n_mem=args.n_mem,
        chunk_size=args.chunk,
        segmentation=args.segmentation,
    )
    rng = random.Random(0)
    print(f"model={args.model} dtype={model.dtype} threads={torch.get_num_threads()} tokens~{args.tokens} config={cfg}")
    print("| depth | method | prompt tokens | answer | correct | seconds |")
    print("|---|---|---|---|---|---|")
    for depth in [float(d) for d in args.depths.split(",")]:
        key = rng.randint(10000, 99999)
        ids = passkey_prompt(tokenizer, filler, depth, key)
        runs = [("memory", cfg)] + ([("full", None)] if args.full else [])
        for name, config in runs:
            start = time.perf_counter()
            if config is None:
                with torch.inference_mode():
                    out = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)[
                        :, ids.shape[1] :
                    ]
            else:
                with EpisodicMemory(model, config) as mem:
                    out = mem.generate(ids, max_new_tokens=10)
            answer = tokenizer.decode(out[0], skip_special_tokens=True).strip()
            seconds = time.perf_counter() - start
            print(
                f"| {depth} | {name} | {ids.shape[1]} | {answer!r} | {str(key) in answer} | {seconds:.0f} |", flush=True
            )


if __name__ == "__main__":
    main()
