"""Peer comparison with NVIDIA kvpress on memalign's own synthetic tasks, same prompts, same KV budget.

kvpress 0.5.5 pins ``transformers>=4.56,<5.3`` while memalign needs 5.23, so the presses run in a
separate venv (``.cache/kvpress-venv``: ``torch==2.13.0`` installed first from the local wheel, then
``benchmarks/kvpress_requirements.txt``). This script is both sides:

* driver (memalign's venv): generates the records with memalign's generators and writes them as JSONL
  *with the exact prompt token ids* and the context/question split, starts the worker once per press,
  then scores the predictions with memalign's metrics into the usual result folder
  (``<task>__<length>__<model>__kvpress-<press>__b<budget>__<dtype>__data-<hash>__seed<seed>``,
  with the same recorded configuration and resume check as ``memalign bench run``), so ``memalign bench report``
  shows kvpress rows next to memalign's methods;
* worker (``--worker``, kvpress's venv, no memalign import): kvpress's pipeline protocol by hand on the
  given ids: prefill the context under ``with press(model)``, then greedy-decode the question from the
  compressed cache with explicit position ids (the question is never compressed).

Equal budget: the press keeps ``n_init + n_local + n_mem`` context tokens (compression ratio
``1 - budget / context_len``), the same number of KV entries memalign's memory methods attend to.
StreamingLLM keeps ``n_init`` sinks like memalign's ``streaming``.

    python benchmarks/kvpress_peer.py --task passkey,niah_single_1 --lengths 4k,8k \
        --model smollm2-135m-instruct --samples 2 --out results/ --presses streaming,snapkv,knorm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "kvpress-venv"
REQUIREMENTS = Path(__file__).with_name("kvpress_requirements.txt")
PRESSES = ("streaming", "snapkv", "knorm", "expected_attention")


# ---- worker side (kvpress venv; must not import memalign) -------------------------------------------


def make_press(name: str, ratio: float, n_sink: int):  # noqa: ANN201 - kvpress types exist only in its venv
    import kvpress

    if name == "streaming":
        return kvpress.StreamingLLMPress(compression_ratio=ratio, n_sink=n_sink)
    if name == "snapkv":
        return kvpress.SnapKVPress(compression_ratio=ratio)
    if name == "knorm":
        return kvpress.KnormPress(compression_ratio=ratio)
    if name == "expected_attention":
        return kvpress.ExpectedAttentionPress(compression_ratio=ratio)
    raise SystemExit(f"unknown press {name!r}; choose from {', '.join(PRESSES)}")


def worker(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype)).eval()
    out = Path(args.predictions)
    done = {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()} if out.is_file() else set()
    eos = model.generation_config.eos_token_id
    base_stop = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    rows = [json.loads(line) for line in Path(args.records).read_text().splitlines() if line.strip()]
    with out.open("a", encoding="utf-8") as fh:
        for k, row in enumerate(rows, 1):
            if row["id"] in done:
                continue
            ids, n_ctx = row["input_ids"], row["context_len"]
            ratio = max(0.0, 1.0 - args.budget / n_ctx)
            press = make_press(args.press, ratio, args.n_sink)
            stop = base_stop | {tokenizer.encode(s, add_special_tokens=False)[-1] for s in row.get("stop", []) if s}
            start = time.perf_counter()
            with torch.inference_mode():
                cache = DynamicCache()
                with press(model):
                    model.model(input_ids=torch.tensor([ids[:n_ctx]]), past_key_values=cache)
                kept = cache.get_seq_length()
                question = torch.tensor([ids[n_ctx:]])
                positions = torch.arange(n_ctx, len(ids)).unsqueeze(0)
                logits = model(
                    input_ids=question, past_key_values=cache, position_ids=positions, logits_to_keep=1
                ).logits
                generated: list[int] = []
                token = int(logits[0, -1].argmax())
                for step in range(row["max_new_tokens"]):
                    if token in stop:
                        break
                    generated.append(token)
                    if step == row["max_new_tokens"] - 1:
                        break
                    logits = model(
                        input_ids=torch.tensor([[token]]),
                        past_key_values=cache,
                        position_ids=torch.tensor([[len(ids) + step]]),
                    ).logits
                    token = int(logits[0, -1].argmax())
            prediction = tokenizer.decode(generated, skip_special_tokens=True)
            result = {
                "id": row["id"],
                "task": row["task"],
                "metric": row["metric"],
                "answer": row["answer"],
                "meta": row["meta"],
                "prompt_tokens": len(ids),
                "method": f"kvpress-{args.press}",
                "prediction": prediction,
                "new_tokens": len(generated),
                "kv_after_prefill": kept,
                "compression_ratio": round(ratio, 4),
                "seconds": round(time.perf_counter() - start, 3),
            }
            fh.write(json.dumps(result, ensure_ascii=False) + "\n")
            fh.flush()
            print(
                f"[kvpress] {args.press} {k}/{len(rows)} kept {kept}/{n_ctx} {result['seconds']}s: {prediction[:60]!r}",
                flush=True,
            )


# ---- driver side (memalign venv) -------------------------------------------------------------------


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import kvpress"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {VENV} (torch==2.13.0 first, then {REQUIREMENTS.name})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    return python


def driver(args: argparse.Namespace) -> None:
    import yaml

    from memalign.bench.export import export_records
    from memalign.bench.loaders.fingerprint import file_sha256, model_identity
    from memalign.bench.records import read_appended_jsonl
    from memalign.bench.runner import CONFIG_FILE, PREDICTIONS_FILE, check_resume, finalize, model_slug
    from memalign.cli.bench import parse_lengths
    from memalign.models.loading import resolve_source

    python = ensure_venv()
    model_dir, _ = resolve_source(args.model)  # a preset resolves to its safetensors copy
    budget = args.n_init + args.n_local + args.n_mem
    dtype = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(args.dtype, args.dtype)
    out = Path(args.out)
    for task in args.task.split(","):
        for length in parse_lengths(args.lengths):
            records = out / "_records" / f"{task}__{length}__{model_slug(args.model)}__seed{args.seed}.jsonl"
            if not records.is_file():
                export_records(
                    [task], [length], args.model, records, samples=args.samples, seed=args.seed, haystack=args.haystack
                )
            # The exported prompts are the data this cell answers: a changed essay folder or generator
            # gives another hash, hence another folder.
            data = {"records": {"path": str(records.resolve()), "sha256": file_sha256(records)}}
            for press in args.presses.split(","):
                method = f"kvpress-{press}"
                folder = out / (
                    f"{task}__{length}__{model_slug(args.model)}__{method}__b{budget}__{dtype}"
                    f"__data-{data['records']['sha256'][:8]}__seed{args.seed}"
                )
                config = {
                    "task": task,
                    "length": length,
                    "method": method,
                    "model": args.model,
                    "samples": args.samples,
                    "seed": args.seed,
                    "dtype": args.dtype,
                    "dtype_used": dtype,
                    "model_identity": model_identity(args.model),
                    "data": data,
                    "budget": {"n_init": args.n_init, "n_local": args.n_local, "n_mem": args.n_mem},
                    "method_config": {
                        "name": method,
                        "press": press,
                        "kept_context_tokens": budget,
                        "n_sink": args.n_init,
                        "kvpress": "0.5.5",
                        "budget": {"n_init": args.n_init, "n_local": args.n_local, "n_mem": args.n_mem},
                    },
                    "name": folder.name,
                }
                check_resume(folder, config)  # a folder of another configuration is refused, untouched
                read_appended_jsonl(folder / PREDICTIONS_FILE)  # drops a line cut off by a killed worker
                folder.mkdir(parents=True, exist_ok=True)
                (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
                cmd = [
                    str(python),
                    __file__,
                    "--worker",
                    "--records",
                    str(records),
                    "--model-dir",
                    model_dir,
                    "--press",
                    press,
                    "--budget",
                    str(budget),
                    "--n-sink",
                    str(args.n_init),
                    "--dtype",
                    args.dtype,
                    "--predictions",
                    str(folder / PREDICTIONS_FILE),
                    "--threads",
                    str(args.threads),
                ]
                subprocess.run(cmd, check=True)
                metrics = finalize(folder, config)
                print(f"{folder.name}: {metrics['score']} (n={metrics['n']})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--records"), parser.add_argument("--model-dir"), parser.add_argument("--predictions")
    parser.add_argument("--press", default="snapkv")
    parser.add_argument("--budget", type=int, default=3200)
    parser.add_argument("--n-sink", type=int, default=128)
    parser.add_argument("--task", default="passkey")
    parser.add_argument("--lengths", default="4k")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presses", default="streaming,snapkv,knorm")
    parser.add_argument("--n-init", type=int, default=128)
    parser.add_argument("--n-local", type=int, default=2048)
    parser.add_argument("--n-mem", type=int, default=1024)
    parser.add_argument("--dtype", default="float32", help="torch dtype name (float32 on CPUs without native bf16)")
    parser.add_argument("--haystack", type=Path, default=ROOT.parent / "shared" / "data" / "haystack" / "paul_graham")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the worker (0: torch's default)")
    args = parser.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
