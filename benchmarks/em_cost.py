"""Cost of episodic memory vs the unmodified model: prefill tokens/s, decode ms/token, peak RSS, bytes held.

Each (method, context length) runs in its own subprocess so peak RSS is per configuration; ratios are
taken between runs of the same invocation (these machines are noisy: compare within one table). Each
row also records process CPU time (``prefill tok/CPU-s``, ``decode CPU ms/tok``): with ``--threads 1``
on a machine shared with other jobs it moves much less with the load than wall-clock time (measured:
five jobs on 2 cores halved wall-clock throughput at 1k tokens and cost ~10 % in CPU-time throughput,
the rest being cache and memory-bandwidth contention), but it is not load-free either.

    python benchmarks/em_cost.py --model smollm2-135m-instruct --lengths 4k,8k,16k,32k,64k \
        --n-local 2048 --n-mem 2048 --out results/em_cost_smollm2

``full`` is the unmodified model (sdpa): one forward over the whole prompt (only the last position's
logits), then decode with its DynamicCache; it runs up to the model's max positions (--full-max to cap).
``memory`` is EM-LLM attached (surprise events), memalign's chunked driver; ``memory+disk`` the same with
event K/V spilled to one file per layer (read back with pread) past ``--host-budget-mib`` of host memory (model-wide).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def parse_length(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * 1024) if text.endswith("k") else int(text)


@contextmanager
def clock() -> Iterator[dict[str, float]]:
    """Wall-clock and process CPU seconds of the block, in the yielded dict once it exits."""
    spent: dict[str, float] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    yield spent
    spent.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)


def worker(args: argparse.Namespace) -> dict:
    import torch

    from memalign import get_arch_spec, load_model
    from memalign.memory import EMConfig, EpisodicMemory

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    spec = get_arch_spec(model)
    vocab = min(spec.vocab_size, 30000)
    ids = torch.randint(100, vocab, (1, args.length), generator=torch.Generator().manual_seed(0))
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.inference_mode():  # weights are paged in lazily: one short forward makes them resident
        model(ids[:, :16])
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row: dict = {"method": args.method, "length": args.length, "model": args.model, "dtype": str(model.dtype)}
    with torch.inference_mode():
        if args.method == "full":
            from transformers import DynamicCache

            cache = DynamicCache(config=model.config)
            with clock() as prefill:
                out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            with clock() as decode:
                for _ in range(args.decode):
                    out = model(token, past_key_values=cache, use_cache=True)
                    token = out.logits[:, -1].argmax(-1, keepdim=True)
            row["kv_bytes"] = sum(layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers)
        else:
            from memalign.memory.store_config import StoreConfig

            store = StoreConfig(page_tokens=args.page_tokens)
            if args.method == "memory+disk":  # the disk tier past a model-wide host budget
                store = StoreConfig(
                    host_budget_bytes=int(args.host_budget_mib * 2**20),
                    offload_dir=args.offload_dir,
                    page_tokens=args.page_tokens,
                )
            cfg = EMConfig(
                n_init=args.n_init,
                n_local=args.n_local,
                n_mem=args.n_mem,
                chunk_size=args.chunk,
                segmentation=args.segmentation,
                store=store,
            )
            chunk_cpu: list[float] = []
            last = [time.process_time()]

            def on_chunk(_: int) -> None:  # CPU seconds of each chunk: is the cost per token flat in length?
                now = time.process_time()
                chunk_cpu.append(round(now - last[0], 3))
                last[0] = now

            with EpisodicMemory(model, cfg) as mem:
                with clock() as prefill:
                    cache, logits = mem.prefill(ids, progress=on_chunk)
                row["chunk_cpu_s"] = chunk_cpu
                with clock() as decode:
                    mem.decode(cache, logits, args.decode + 1)
                stats = cache.stats()
                row["kv_bytes"] = sum(r["bytes"] for r in stats)
                row["events_per_layer"] = sum(r["events"] for r in stats) / len(stats)
                # one [heads*head_dim] vector per event and layer, in the model's dtype
                spec_dims = spec.num_heads * spec.head_dim * torch.finfo(model.dtype).bits // 8
                row["repr_bytes_per_token"] = sum(r["events"] for r in stats) * spec_dims / args.length
                row["mean_event_size"] = sum(r["mean_event_size"] for r in stats) / len(stats)
                seq = cache.sequences[0]
                tiers: dict[str, int] = {}
                for layer in seq.layers:
                    store = layer.store
                    if store is not None and hasattr(store, "tier_bytes"):
                        for k, v in store.tier_bytes().items():
                            tiers[k] = tiers.get(k, 0) + v
                row["tier_bytes"] = tiers
    row["prefill_s"], row["prefill_cpu_s"] = prefill["wall"], prefill["cpu"]
    row["decode_ms"] = 1000 * decode["wall"] / args.decode
    row["decode_cpu_ms"] = 1000 * decode["cpu"] / args.decode
    row["prefill_tok_s"] = args.length / row["prefill_s"]
    # Tokens per second of process CPU time: on a shared machine (other jobs on the cores) this moves far
    # less with the load than wall-clock throughput (contention for caches and memory still shows).
    row["prefill_tok_cpu_s"] = args.length / row["prefill_cpu_s"]
    row["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row["rss_model"] = rss_model
    row["rss_loaded"] = rss_loaded  # runtime + resident weights, after one 16-token forward
    row["param_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    if args.method == "memory+disk":
        row["host_budget_bytes"] = int(args.host_budget_mib * 2**20)
    row["kv_bytes_per_token_theory"] = spec.kv_bytes_per_token(torch.finfo(model.dtype).bits // 8)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--lengths", default="4k,8k,16k,32k,64k")
    ap.add_argument("--methods", default="full,memory")
    ap.add_argument("--n-init", type=int, default=128)
    ap.add_argument("--n-local", type=int, default=2048)
    ap.add_argument("--n-mem", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--segmentation", default="surprise")
    ap.add_argument("--decode", type=int, default=16, help="decode steps timed")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument(
        "--host-budget-mib",
        type=float,
        default=1024,
        help="method memory+disk: host memory for event K/V (all layers) before pages go to disk",
    )
    ap.add_argument("--offload-dir", default=None, help="method memory+disk: where spill files go (default: tmp)")
    ap.add_argument("--page-tokens", type=int, default=4096, help="tokens per event-store page (StoreConfig)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    ap.add_argument("--full-max", type=int, default=None, help="longest context for full attention")
    ap.add_argument("--out", type=Path, default=Path("results/em_cost"))
    ap.add_argument("--resume", action="store_true", help="keep (method, length) rows already in OUT/rows.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from memalign.models.info import describe_model

    max_pos = describe_model(args.model)["max_position_embeddings"] or 1 << 30
    full_max = min(args.full_max or max_pos, max_pos)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    saved = args.out / "rows.json"
    previous = json.loads(saved.read_text()) if args.resume and saved.is_file() else []
    kept = {(r["method"], r["length"]): r for r in previous if "skipped" not in r}
    lengths = [parse_length(x) for x in args.lengths.split(",")]
    for length in lengths:
        for method in args.methods.split(","):
            if (method, length) in kept:
                rows.append(kept[(method, length)])
                continue
            if method == "full" and length > full_max:
                rows.append({"method": "full", "length": length, "skipped": f"> {full_max} positions"})
                continue
            cmd = [sys.executable, __file__, "--worker", "--method", method, "--length", str(length)]
            for flag in (
                "model",
                "n_init",
                "n_local",
                "n_mem",
                "chunk",
                "segmentation",
                "decode",
                "dtype",
                "threads",
                "host_budget_mib",
                "page_tokens",
            ):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            if args.offload_dir:
                cmd += ["--offload-dir", args.offload_dir]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                rows.append({"method": method, "length": length, "skipped": reason[:80]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
            (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    report(rows, args)


def _fmt(row: dict, key: str, digits: int) -> str:
    """A number of the row, or blank for rows measured before the field existed (``--resume``)."""
    return f"{row[key]:.{digits}f}" if key in row else ""


def _ratio(row: dict, base: dict | None, key: str) -> str:
    """``row[key] / base[key]`` to two decimals, or blank when either is missing (no base, older rows)."""
    return f"{row[key] / base[key]:.2f}" if base and key in row and key in base else ""


def report(rows: list[dict], args: argparse.Namespace) -> None:
    ok = [r for r in rows if "skipped" not in r]
    by = {(r["method"], r["length"]): r for r in ok}
    lengths = sorted({r["length"] for r in rows})
    lines = [
        f"model {args.model}, memory n_init={args.n_init} n_local={args.n_local} n_mem={args.n_mem} "
        f"chunk={args.chunk} ({args.segmentation}), {args.threads or 'default'} torch threads",
        "",
        "| context | method | prefill tok/s | prefill tok/CPU-s | decode ms/tok | decode CPU ms/tok "
        "| peak RSS MiB | KV/memory MiB | mem/full prefill | mem/full prefill (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for length in lengths:
        for method in args.methods.split(","):
            r = by.get((method, length))
            if r is None:
                skipped = next((x["skipped"] for x in rows if x["method"] == method and x["length"] == length), "")
                lines.append(f"| {length} | {method} | not run ({skipped}) | | | | | | | |")
                continue
            full = by.get(("full", length)) if method != "full" else None
            ratio, cpu_ratio = _ratio(r, full, "prefill_tok_s"), _ratio(r, full, "prefill_tok_cpu_s")
            lines.append(
                f"| {length} | {method} | {r['prefill_tok_s']:.0f} | {_fmt(r, 'prefill_tok_cpu_s', 0)} | "
                f"{r['decode_ms']:.1f} | {_fmt(r, 'decode_cpu_ms', 1)} | "
                f"{r['peak_rss'] / 2**20:.0f} | {r['kv_bytes'] / 2**20:.1f} | {ratio} | {cpu_ratio} |"
            )
    mem = sorted((r for r in ok if r["method"] == "memory"), key=lambda r: r["length"])
    if len(mem) >= 2:
        first, last = mem[0], mem[-1]
        by_len = {r["length"]: r for r in mem}
        lines.append("")
        targets = (
            ("prefill 64k/8k throughput", 8192, ("prefill_tok_s", "prefill_tok_cpu_s"), ">= 0.8"),
            ("decode 64k/4k latency", 4096, ("decode_ms", "decode_cpu_ms"), "<= 1.5"),
        )
        for what, base, keys, target in targets:
            for key, kind in zip(keys, ("wall clock", "CPU time"), strict=True):
                value = _ratio(by_len.get(65536, {}), by_len.get(base), key)
                if value:
                    lines.append(f"memory {what} ratio ({kind}): {value} (target {target})")
        growth = (last["kv_bytes"] - first["kv_bytes"]) / (last["length"] - first["length"])
        lines.append(
            f"memory bytes held per token ({first['length']}->{last['length']}): {growth:.0f} "
            f"(KV per token {first['kv_bytes_per_token_theory']}; held = allocated capacity)"
        )
        if len(mem) >= 3:  # host memory actually grown, between the two longest runs (past fixed costs)
            a, b = mem[-2], mem[-1]
            rss = (b["peak_rss"] - a["peak_rss"]) / (b["length"] - a["length"])
            lines.append(
                f"peak RSS growth per token ({a['length']}->{b['length']}): {rss:.0f} "
                f"(KV per token {b['kv_bytes_per_token_theory']} + representative vectors "
                f"~{b.get('repr_bytes_per_token', 0):.0f})"
            )
    for r in sorted((r for r in ok if r.get("chunk_cpu_s")), key=lambda r: (r["method"], r["length"])):
        line = _chunk_profile(r["chunk_cpu_s"], args.chunk, args.n_init + args.n_local + args.n_mem)
        if line:
            lines.append(f"{r['method']} {r['length']}: {line}")
    for r in sorted((r for r in ok if r["method"] == "memory+disk" and "param_bytes" in r), key=lambda r: r["length"]):
        budget, peak = r["host_budget_bytes"], r["peak_rss"]
        strict = r["param_bytes"] + budget + 2**30
        loaded = r["rss_loaded"] + budget + 2**30
        tiers = r.get("tier_bytes", {})
        lines.append(
            f"disk tier at {r['length']}: peak RSS {peak / 2**20:.0f} MiB; host tier "
            f"{tiers.get('host', 0) / 2**20:.0f} MiB, disk {tiers.get('disk', 0) / 2**20:.0f} MiB; "
            "target model + budget + 1 GiB: "
            f"{strict / 2**20:.0f} MiB with model = parameter bytes ({'met' if peak < strict else 'NOT met'}), "
            f"{loaded / 2**20:.0f} MiB with model = RSS after loading and one forward "
            f"({'met' if peak < loaded else 'NOT met'})"
        )
    text = "\n".join(lines)
    print(text)
    (args.out / "table.md").write_text(text + "\n")
    plot(ok, args.out / "em_cost.png", args.model)


def _chunk_profile(chunk_cpu: list[float], chunk: int, warm_tokens: int) -> str:
    """Mean CPU seconds per chunk in each quarter of the input once memory is in full use (after
    ``warm_tokens``): equal quarters mean the cost per token does not grow with context length."""
    steady = chunk_cpu[-(-warm_tokens // chunk) :]  # skip ceil(warm_tokens / chunk) chunks
    if len(steady) < 8:
        return ""
    q = len(steady) // 4
    quarters = [steady[i * q : (i + 1) * q] for i in range(3)] + [steady[3 * q :]]
    means = " / ".join(f"{sum(x) / len(x):.2f}" for x in quarters)
    return (
        f"CPU s per {chunk}-token chunk, quarters of the input past the first {warm_tokens} tokens: {means} "
        f"(last/first quarter {sum(quarters[-1]) / len(quarters[-1]) / (sum(quarters[0]) / len(quarters[0])):.2f})"
    )


def plot(rows: list[dict], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for method in sorted({r["method"] for r in rows}):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["length"])
        xs = [r["length"] for r in pts]
        axes[0].plot(xs, [r["prefill_tok_s"] for r in pts], marker="o", label=method)
        axes[1].plot(xs, [r["decode_ms"] for r in pts], marker="o", label=method)
        axes[2].plot(xs, [r["peak_rss"] / 2**20 for r in pts], marker="o", label=method)
    for ax, title in zip(axes, ("prefill tokens/s", "decode ms/token", "peak RSS (MiB)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context tokens")
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"EM-LLM cost vs unmodified attention — {model}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
