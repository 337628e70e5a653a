"""``memalign bench ...``: long-context benchmark runner and reports."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.table import Table

from memalign.cli import app
from memalign.cli.display import console
from memalign.errors import ConfigError, DataError
from memalign.scaleout.options import ray_address_option, worker_cpus_option, worker_gpus_option, workers_option

bench_app = typer.Typer(help="Long-context benchmarks: run tasks x lengths x methods, report.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def parse_lengths(text: str) -> list[int]:
    """``"4k,8k,16384"`` -> ``[4096, 8192, 16384]`` (k = 1024, as RULER's lengths)."""
    out = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(k?)", part)
        if not match:
            raise ConfigError(f"bad length {part!r}: use integers or e.g. 4k,8k")
        out.append(int(match.group(1)) * (1024 if match.group(2) else 1))
    if not out:
        raise ConfigError("no lengths given")
    return out


def _names(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _depths(text: str | None) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        values = tuple(float(d) for d in text.split(","))
    except ValueError:
        raise ConfigError(f"bad --depths {text!r}: comma-separated fractions such as 0,0.5,1") from None
    if any(not 0.0 <= d <= 1.0 for d in values):
        raise ConfigError(f"bad --depths {text!r}: every depth is a fraction in [0, 1]")
    return values


@bench_app.command("tasks")
def tasks_cmd() -> None:
    """List the registered tasks (synthetic generators and real-suite loaders)."""
    from memalign.bench.tasks import list_tasks

    table = Table(title="memalign bench tasks")
    table.add_column("task", no_wrap=True)
    table.add_column("kind")
    table.add_column("description", overflow="fold", ratio=1)
    for name, task in list_tasks().items():
        table.add_row(name, "synthetic" if task.synthetic else "suite", task.description)
    console.print(table)


@bench_app.command("methods")
def methods_cmd() -> None:
    """List the registered methods."""
    from memalign.bench.methods import METHODS

    table = Table(title="memalign bench methods")
    table.add_column("method", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    for name, spec in METHODS.items():
        table.add_row(name, spec.description)
    console.print(table)


@bench_app.command("run")
def run_cmd(
    task: list[str] = typer.Option(..., "--task", "-t", help="task name(s), repeatable or comma-separated"),
    lengths: str = typer.Option("4k", help="target lengths in tokens, e.g. 4k,8k,16k (0 = untruncated suites)"),
    methods: list[str] = typer.Option(["full"], "--methods", "-m", help="method name(s), comma-separated"),
    model: str = typer.Option("smollm2-135m-instruct", help="preset, .gguf, local dir, hub id or tiny:<kind>"),
    samples: int = typer.Option(5, help="samples per length (per depth for tasks given --depths)"),
    out: Path = typer.Option(Path("bench-results"), help="results folder (one sub-folder per configuration)"),
    seed: int = typer.Option(0, help="seed of the synthetic generators"),
    n_init: int = typer.Option(128, help="budget: attention-sink tokens"),
    n_local: int = typer.Option(4096, help="budget: local window tokens"),
    n_mem: int = typer.Option(2048, help="budget: retrieved memory tokens (streaming adds them to its window)"),
    chunk_size: int = typer.Option(512, help="memory methods: prefill chunk (one retrieval per chunk)"),
    memory_distance: int | None = typer.Option(
        None,
        help="memory methods: relative position of every memory "
        "key (default n_local - 1, as EM-LLM; small models may "
        "need less)",
    ),
    last_token_alone: bool = typer.Option(
        True,
        "--last-token-alone/--last-token-in-chunk",
        help="memory methods: feed the prompt's last token as its own step "
        "(the reference driver; the first answer token follows a retrieval "
        "for that token's query) or inside the last chunk",
    ),
    prefill_chunk: int = typer.Option(2048, help="full attention: prefill chunk"),
    dtype: str = typer.Option(
        "auto", help="auto (bf16 where the hardware computes it natively, else fp32), bf16, fp16 or fp32"
    ),
    haystack: Path | None = typer.Option(None, help="folder of .txt essays for niah / RULER essay tasks"),
    data_dir: Path | None = typer.Option(None, help="folder of official LongBench / InfiniteBench .jsonl files"),
    depths: str | None = typer.Option(None, help="needle depth grid, e.g. 0,0.25,0.5,0.75,1"),
    threads: int = typer.Option(
        0, help="torch threads (0: torch's default; with --ray: per worker, 0 = --worker-cpus)"
    ),
    ray: str | None = ray_address_option("items"),
    workers: int = workers_option(),
    worker_cpus: float = worker_cpus_option(),
    worker_gpus: float = worker_gpus_option(" (> 0: the model goes on cuda)"),
) -> None:
    """Run every task x length x method and write predictions, metrics and config per configuration."""
    if threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0: torch's default), got {threads}")
    from memalign.scaleout.options import ray_options as make_ray_options

    ray_options = make_ray_options(ray, workers, worker_cpus, worker_gpus, threads)
    if threads and ray_options is None:
        import torch

        torch.set_num_threads(threads)
    from memalign.bench.methods import Budget
    from memalign.bench.runner import run_sweep

    budget = Budget(
        n_init=n_init,
        n_local=n_local,
        n_mem=n_mem,
        chunk_size=chunk_size,
        memory_distance=memory_distance,
        last_token_alone=last_token_alone,
    )
    results = run_sweep(
        _names(task),
        parse_lengths(lengths),
        _names(methods),
        model,
        out,
        samples=samples,
        seed=seed,
        budget=budget,
        dtype=dtype,
        prefill_chunk=prefill_chunk,
        haystack=haystack,
        data_dir=data_dir,
        depths=_depths(depths),
        ray=ray_options,
    )
    from memalign.bench.report import score_tables
    from memalign.cli.tables import print_tables

    print_tables(score_tables([(r["config"]["name"], r) for r in results]))


@bench_app.command("generate")
def generate_cmd(
    task: list[str] = typer.Option(..., "--task", "-t", help="task name(s)"),
    lengths: str = typer.Option("4k", help="target lengths, e.g. 4k,8k"),
    model: str = typer.Option("smollm2-135m-instruct", help="whose tokenizer calibrates the lengths"),
    samples: int = typer.Option(5),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., help="JSONL file to write"),
    haystack: Path | None = typer.Option(None),
    data_dir: Path | None = typer.Option(None),
    depths: str | None = typer.Option(None),
) -> None:
    """Write task records as JSONL with the exact prompt token ids (for the kvpress peer or other tools)."""
    from memalign.bench.export import export_records
    from memalign.bench.loaders.haystack import read_haystack

    if samples <= 0:
        raise ConfigError(f"--samples must be > 0, got {samples}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; pass the JSONL file to write")
    if haystack is not None:
        read_haystack(haystack)  # a wrong folder fails before the tokenizer loads
    n = export_records(
        _names(task),
        parse_lengths(lengths),
        model,
        out,
        samples=samples,
        seed=seed,
        haystack=haystack,
        data_dir=data_dir,
        depths=_depths(depths),
    )
    console.print(f"wrote {n} records to {out}")


def _read_config(path: Path) -> dict:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not readable YAML ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: not a mapping of configuration keys")
    return config


@bench_app.command("score")
def score_cmd(directories: list[Path] = typer.Argument(..., help="result folders with predictions.jsonl")) -> None:
    """(Re)compute metrics.json from predictions.jsonl (e.g. for predictions written by another tool)."""
    from memalign.bench.runner import CONFIG_FILE, PREDICTIONS_FILE, finalize

    for directory in directories:
        if not (directory / PREDICTIONS_FILE).is_file():
            raise DataError(f"{directory}: no {PREDICTIONS_FILE} there (pass result folders of `memalign bench run`)")
        config = _read_config(directory / CONFIG_FILE) if (directory / CONFIG_FILE).is_file() else {}
        metrics = finalize(directory, config)
        console.print(f"{directory}: score {metrics['score']} (n={metrics['n']}, failed {metrics['n_failed']})")


@bench_app.command("report")
def report_cmd(
    directories: list[Path] = typer.Argument(..., help="results folders (searched recursively for metrics.json)"),
    plots: Path | None = typer.Option(None, help="where to write PNG plots (default: <first folder>/plots)"),
    markdown: Path | None = typer.Option(None, help="also write the table as Markdown to this file"),
    compare_from: str = typer.Option("0", help="head-to-head over cells of at least this length only (e.g. 16k)"),
    summary: str = typer.Option(
        "",
        help="also a compact grid per model (task x method rows, one column per "
        "length) of these methods, e.g. em-llm,infllm,streaming,full; a name stands "
        "for its default-setting runs, a full label such as 'em-llm (3k, distance 512)' "
        "for exactly that row",
    ),
) -> None:
    """Print a score table (method x length per model and task), a head-to-head of methods over the
    prompts both answered, and write plots."""
    from memalign.bench.report import (
        head_to_head_table,
        score_tables,
        summary_grid,
        summary_tables,
        write_plots,
    )
    from memalign.bench.results import collect, collect_items
    from memalign.bench.statistics import head_to_head
    from memalign.cli.tables import print_tables
    from memalign.reporting import markdown_document

    results = collect(directories)
    if not results:
        raise ConfigError(f"no metrics.json under {', '.join(map(str, directories))}")
    min_length = 0 if compare_from.strip() in ("", "0") else parse_lengths(compare_from)[0]
    scores = score_tables(results)
    print_tables(scores)  # first: a --summary error below refers to the labels in these tables
    summaries = []
    if summary.strip():
        try:
            summaries = summary_tables(summary_grid(results, _names([summary])))
        except ConfigError as exc:
            raise ConfigError(f"--summary: {exc}") from None
        if not summaries:
            raise ConfigError(f"--summary {summary}: no results of those methods (labels in the tables above)")
    pairs = head_to_head(collect_items(directories, min_length))
    h2h = [head_to_head_table(pairs, min_length)] if pairs else []
    print_tables([*summaries, *h2h])
    written = write_plots(results, plots or directories[0] / "plots")
    for path in written:
        console.print(f"plot: {path}")
    if markdown:
        markdown.write_text(markdown_document([*summaries, *scores, *h2h]), encoding="utf-8")
        console.print(f"table: {markdown}")


@bench_app.command("download")
def download_cmd(
    suite: str = typer.Argument(..., help="longbench or infinitebench"),
    dest: Path = typer.Argument(..., help="folder to put the .jsonl files in"),
) -> None:
    """Fetch the official suite files from the Hugging Face hub (needs network access to the hub)."""
    from memalign.bench.loaders.download import download_suite

    for path in download_suite(suite, dest):
        console.print(f"wrote {path}")
