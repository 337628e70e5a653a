"""``memalign persona eval`` / ``memalign persona report``: compare alignment modes, PAlign-style."""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from memalign.cli.display import console
from memalign.cli.persona import ITEM_KEY_HELP, _floats, _ints, persona_app
from memalign.errors import ConfigError, DataError
from memalign.scaleout.options import ray_address_option, worker_cpus_option, worker_gpus_option, workers_option

DATA_FILES = {
    "item_key": "ipip_neo_300_itemkey.csv",
    "split": "mpi_300_split.json",
    "rewordings": "mpi_120.csv",
    "subjects": "subjects_200.json",
    "personality_prompts": "personality_prompt_200.json",
}


def _from_data(value: Path | None, data: Path | None, key: str, required: bool = False) -> Path | None:
    if value is not None:
        return value
    if data is not None and (data / DATA_FILES[key]).is_file():
        return data / DATA_FILES[key]
    if required:
        flag = "--" + key.replace("_", "-")
        raise ConfigError(f"{flag} is required (or --data DIR holding {DATA_FILES[key]})")
    return None


def _file_record(path: Path | None, sha256: str | None = None) -> dict[str, str] | None:
    """Where a data file lies (provenance) and the sha256 of its bytes (compared on resume)."""
    if path is None:
        return None
    digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path.resolve()), "sha256": digest}


@persona_app.command("eval")
def eval_cmd(
    modes: str = typer.Option(
        "all", help="comma-separated modes, or all / llm / predictors (see `memalign persona modes`)"
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "--model_file",
        "-m",
        help="preset, .gguf, local dir or hub id (not needed for predictor modes)",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (resumable; refuses another configuration)"),
    data: Path | None = typer.Option(
        None,
        help="folder with PAlign's PAPI files (item key, split, mpi_120.csv, "
        "subjects_200.json, personality_prompt_200.json); each can be given alone",
    ),
    subjects: Path | None = typer.Option(None, help="answers file (PAPI JSON, CSV, memalign JSON)"),
    item_key: Path | None = typer.Option(None, "--item-key", help=ITEM_KEY_HELP),
    split: Path | None = typer.Option(None, help="PAlign split JSON; default: train = the 120 short-form items"),
    rewordings: Path | None = typer.Option(None, help="second-person item texts (mpi_120.csv)"),
    personality_prompts: Path | None = typer.Option(
        None, help="per-subject descriptions for personality_prompt (default: the model writes one from the answers)"
    ),
    recoded: bool | None = typer.Option(
        None,
        "--recoded/--raw",
        help="reverse-keyed answers recoded (PAPI) or as ticked; needed unless the file declares it",
    ),
    limit: int | None = typer.Option(None, help="evaluate the first N subjects of the file"),
    offset: int = typer.Option(0, help="skip the first N subjects"),
    answering: str = typer.Option(
        "logits", help="logits (option-token probabilities) or generate (greedy text, parsed; unparsed answers counted)"
    ),
    unparsed: str = typer.Option("midpoint", help="unparsed generated answers: midpoint (scored as 3) or exclude"),
    k: str = typer.Option("24,64", help="PAS heads; several: chosen by CV"),
    alpha_grid: str = typer.Option("-4,-2,-1,0,1,2,4,6,8", help="PAS strengths tried by CV"),
    read: str = typer.Option("decision", help="decision (default) or answer (PAlign's read position)"),
    palign: bool = typer.Option(
        False, "--palign", help="PAlign's PAS settings (read answer, K 24, alpha 0..8, positions all) with CV selection"
    ),
    calibration_l2: float = typer.Option(0.1, help="slope shrinkage of the calibration modes"),
    label: str | None = typer.Option(
        None,
        help="name this run's variant (e.g. other PAS settings): results are "
        "stored as MODE[LABEL] beside the default ones",
    ),
    threads: int = typer.Option(
        0, help="torch threads (0: torch's default; with --ray: per worker, 0 = --worker-cpus)"
    ),
    dtype: str = typer.Option("auto"),
    device: str = typer.Option(
        "cpu", help="where the model runs (with --ray: in each worker; cuda needs --worker-gpus)"
    ),
    ray: str | None = ray_address_option("subjects"),
    workers: int = workers_option(),
    worker_cpus: float = worker_cpus_option(),
    worker_gpus: float = worker_gpus_option(),
) -> None:
    """Evaluate alignment modes on held-out IPIP-NEO items; one `{mode}_{model}_OOD.json` per mode.

    Every input is read and the output folder's configuration checked before the model is loaded, so a
    bad file or a mismatched resume costs no time and writes nothing.
    """
    import torch

    from memalign.models.loading import resolve_dtype
    from memalign.persona import FitConfig, PromptConfig, load_ipip_neo_300, load_rewordings, load_split, palign_split
    from memalign.persona.evaluation import EvalSetup, parse_modes, run_eval
    from memalign.persona.evaluation.modes import MODES
    from memalign.persona.evaluation.report import load_results, markdown_table
    from memalign.persona.evaluation.runner import PROMPTS_MODE, check_folder, check_label, mode_keys, model_config
    from memalign.persona.subjects import load_personality_prompts, read_answers_file
    from memalign.scaleout.options import ray_options as make_ray_options

    names = parse_modes(modes)
    needs_model = any(MODES[m].needs_model for m in names)
    if needs_model and not model:
        raise ConfigError(f"modes {', '.join(m for m in names if MODES[m].needs_model)} need --model")
    if offset < 0 or (limit is not None and limit < 1):
        raise ConfigError("--offset must be >= 0 and --limit >= 1")
    check_label(label)
    ray_options = make_ray_options(ray, workers, worker_cpus, worker_gpus, threads)
    if ray_options is not None and needs_model:
        ray_options.check_device(device)
    if threads and ray_options is None:
        torch.set_num_threads(threads)
    item_key_path = _from_data(item_key, data, "item_key", required=True)
    ipip = load_ipip_neo_300(item_key_path)
    split_path = _from_data(split, data, "split")
    item_split = load_split(split_path, ipip) if split_path else palign_split(ipip)
    subjects_path = _from_data(subjects, data, "subjects", required=True)
    answers = read_answers_file(subjects_path, ipip, recoded=recoded, required_items=item_split.train)
    population = list(answers.subjects)
    chosen = population[offset : offset + limit if limit else None]
    if not chosen:
        raise ConfigError(f"--offset {offset} leaves no subject: {subjects_path} holds {len(population)}")
    rewording_path = _from_data(rewordings, data, "rewordings") if needs_model else None
    texts = load_rewordings(rewording_path, ipip) if rewording_path else None
    prompts_path = _from_data(personality_prompts, data, "personality_prompts") if PROMPTS_MODE in names else None
    persona_texts = load_personality_prompts(prompts_path, [p.subject_id for p in population]) if prompts_path else None
    if persona_texts is not None and (absent := [p.subject_id for p in chosen if p.subject_id not in persona_texts]):
        raise DataError(
            f"{prompts_path} has no description for subject {absent[0]!r} ({len(absent)} of the "
            f"{len(chosen)} evaluated subjects lack one)"
        )
    ks = _ints(k, "--k")
    if palign:
        fit_config, prompt_config = FitConfig.palign(), PromptConfig.palign()
    else:
        fit_config = FitConfig(
            k=ks[0], k_grid=ks if len(ks) > 1 else (), alpha_grid=_floats(alpha_grid, "--alpha-grid")
        )
        prompt_config = PromptConfig(read=read)
    extra = {
        "files": {
            "item_key": _file_record(item_key_path),
            "split": _file_record(split_path),
            "subjects": {**_file_record(subjects_path, answers.sha256), "recoded": answers.recoded},
            "rewordings": _file_record(rewording_path),
            "personality_prompts": _file_record(prompts_path),
        },
        "run": {
            "offset": offset,
            "limit": limit,
            "threads": ray_options.worker_threads if ray_options else torch.get_num_threads(),
            "device": device if needs_model else None,
            **({"ray": ray_options.to_dict()} if ray_options else {}),
        },
    }
    model_name = model if needs_model else None
    # refuse a folder of another configuration now, before minutes of model loading
    check_folder(
        out,
        {
            "modes": mode_keys(names, label),
            **extra,
            # with --ray the dtype resolves on the workers' hardware: compared once they report it
            "model": model_config(model_name, dtype=None if ray_options else resolve_dtype(dtype, device))
            if needs_model
            else None,
        },
        label,
    )
    model_obj = tokenizer = None
    if needs_model and ray_options is None:  # with --ray every worker loads its own
        from memalign.models.loading import load_model

        model_obj, tokenizer = load_model(model, dtype=dtype, device=device)
    setup = EvalSetup(
        ipip,
        item_split,
        population,
        model_obj,
        tokenizer,
        texts,
        prompt_config,
        fit_config,
        persona_texts,
        answering=answering,
        calibration_l2=calibration_l2,
    )
    paths = run_eval(
        setup,
        names,
        chosen,
        out,
        model_name,
        extra,
        unparsed=unparsed,
        label=label,
        ray=ray_options,
        dtype=dtype,
        device=device,
    )
    console.print(markdown_table(load_results(list(paths.values()))), highlight=False, soft_wrap=True)
    console.print(f"wrote {len(paths)} result files to {out}  ->  memalign persona report {out}", highlight=False)


@persona_app.command("report")
def report_cmd(
    dirs: list[Path] = typer.Argument(..., help="output directories of `persona eval` (or *_OOD.json files)"),
    plots: Path | None = typer.Option(None, help="directory for the PNG plots (default: the first directory)"),
    subject: str | None = typer.Option(None, help="subject for the radar chart (default: the first one)"),
    markdown: Path | None = typer.Option(None, help="also write the table as Markdown here"),
) -> None:
    """Print the comparison table and write plots (per-trait error bars, one person's radar chart)."""
    from memalign.cli.tables import print_tables
    from memalign.persona.evaluation.report import comparison_table, load_results, plot_radar, plot_trait_errors

    results = load_results(dirs)
    table = comparison_table(results)
    print_tables([table])
    folder = plots or (dirs[0] if dirs[0].is_dir() else dirs[0].parent)
    folder.mkdir(parents=True, exist_ok=True)
    written = [plot_trait_errors(results, folder / "trait_errors.png")]
    radar = plot_radar(results, folder / "radar.png", subject)
    if radar:
        written.append(radar)
    if markdown:
        markdown.write_text(table.to_markdown(heading=False) + "\n", encoding="utf-8")
        written.append(markdown)
    console.print("wrote " + ", ".join(map(str, written)), highlight=False)


@persona_app.command("modes")
def modes_cmd() -> None:
    """List the evaluation modes."""
    from memalign.persona.evaluation.modes import MODES

    for name, cls in MODES.items():
        console.print(
            f"[bold]{name}[/]  {cls.description}" + ("" if cls.needs_model else "  [dim](no model)[/]"), highlight=False
        )
