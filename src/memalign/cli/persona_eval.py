"""``memalign persona eval`` / ``memalign persona report``: compare alignment modes, PAlign-style."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from memalign.cli.display import console
from memalign.cli.persona import ITEM_KEY_HELP, _floats, persona_app
from memalign.errors import ConfigError

DATA_FILES = {"item_key": "ipip_neo_300_itemkey.csv", "split": "mpi_300_split.json", "rewordings": "mpi_120.csv",
              "subjects": "subjects_200.json", "personality_prompts": "personality_prompt_200.json"}


def _from_data(value: Path | None, data: Path | None, key: str, required: bool = False) -> Path | None:
    if value is not None:
        return value
    if data is not None and (data / DATA_FILES[key]).is_file():
        return data / DATA_FILES[key]
    if required:
        flag = "--" + key.replace("_", "-")
        raise ConfigError(f"{flag} is required (or --data DIR holding {DATA_FILES[key]})")
    return None


def load_personality_prompts(path: Path, subjects_in_file: list[str]) -> dict[str, str]:
    """PAlign's ``personality_prompt*.json``: a list in the subjects file's order, text in ``output[0]``.

    A mapping ``{subject id: text}`` is accepted too.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read personality prompts {path}: {err}") from None
    if isinstance(data, dict):
        return {str(k): (v["output"][0] if isinstance(v, dict) else str(v)) for k, v in data.items()}
    if not isinstance(data, list) or len(data) != len(subjects_in_file):
        raise ConfigError(f"{path} must be a list with one entry per subject of the subjects file "
                          f"({len(subjects_in_file)}), in the same order; it has "
                          f"{len(data) if isinstance(data, list) else type(data).__name__}")
    out = {}
    for n, (sid, entry) in enumerate(zip(subjects_in_file, data, strict=True)):
        try:
            out[sid] = entry["output"][0] if isinstance(entry, dict) else str(entry)
        except (KeyError, IndexError, TypeError):
            raise ConfigError(f"{path} entry {n}: expected {{'output': [text, ...]}}") from None
    return out


@persona_app.command("eval")
def eval_cmd(
    modes: str = typer.Option("all", help="comma-separated modes, or all / llm / predictors "
                              "(see `memalign persona modes`)"),
    model: str | None = typer.Option(None, "--model", "--model_file", "-m",
                                     help="preset, .gguf, local dir or hub id (not needed for predictor modes)"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory (resumable)"),
    data: Path | None = typer.Option(None, help="folder with PAlign's PAPI files (item key, split, mpi_120.csv, "
                                     "subjects_200.json, personality_prompt_200.json); each can be given alone"),
    subjects: Path | None = typer.Option(None, help="answers file (PAPI JSON, CSV, memalign JSON)"),
    item_key: Path | None = typer.Option(None, "--item-key", help=ITEM_KEY_HELP),
    split: Path | None = typer.Option(None, help="PAlign split JSON; default: train = the 120 short-form items"),
    rewordings: Path | None = typer.Option(None, help="second-person item texts (mpi_120.csv)"),
    personality_prompts: Path | None = typer.Option(None, help="per-subject descriptions for personality_prompt "
                                                    "(default: the model writes one from the answers)"),
    recoded: bool | None = typer.Option(None, "--recoded/--raw", help="reverse-keyed answers recoded (PAPI) or "
                                        "as ticked; needed unless the file declares it"),
    limit: int | None = typer.Option(None, help="evaluate the first N subjects of the file"),
    offset: int = typer.Option(0, help="skip the first N subjects"),
    answering: str = typer.Option("logits", help="logits (option-token probabilities) or generate (greedy text, "
                                  "parsed; unparsed answers counted)"),
    unparsed: str = typer.Option("midpoint", help="unparsed generated answers: midpoint (scored as 3) or exclude"),
    k: str = typer.Option("24,64", help="PAS heads; several: chosen by CV"),
    alpha_grid: str = typer.Option("-4,-2,-1,0,1,2,4,6,8", help="PAS strengths tried by CV"),
    read: str = typer.Option("decision", help="decision (default) or answer (PAlign's read position)"),
    palign: bool = typer.Option(False, "--palign", help="PAlign's PAS settings (read answer, K 24, alpha 0..8, "
                                "positions all) with CV selection"),
    calibration_l2: float = typer.Option(0.1, help="slope shrinkage of the calibration modes"),
    label: str | None = typer.Option(None, help="name this run's variant (e.g. other PAS settings): results are "
                                     "stored as MODE[LABEL] beside the default ones"),
    threads: int = typer.Option(0, help="torch threads (0: torch's default)"),
    dtype: str = typer.Option("auto"),
    device: str = typer.Option("cpu"),
) -> None:
    """Evaluate alignment modes on held-out IPIP-NEO items; one `{mode}_{model}_OOD.json` per mode."""
    import torch

    from memalign.persona import FitConfig, PromptConfig, load_answers, load_ipip_neo_300, load_rewordings, load_split
    from memalign.persona.evaluation import EvalSetup, parse_modes, run_eval
    from memalign.persona.evaluation.modes import MODES
    from memalign.persona.evaluation.report import markdown_table

    names = parse_modes(modes)
    needs_model = any(MODES[m].needs_model for m in names)
    if needs_model and not model:
        raise ConfigError(f"modes {', '.join(m for m in names if MODES[m].needs_model)} need --model")
    if threads:
        torch.set_num_threads(threads)
    ipip = load_ipip_neo_300(_from_data(item_key, data, "item_key", required=True))
    split_path = _from_data(split, data, "split")
    item_split = load_split(split_path, ipip) if split_path else None
    if item_split is None:
        from memalign.persona import palign_split

        item_split = palign_split(ipip)
    subjects_path = _from_data(subjects, data, "subjects", required=True)
    population = load_answers(subjects_path, ipip, recoded=recoded, required_items=item_split.train)
    if offset < 0 or (limit is not None and limit < 1):
        raise ConfigError("--offset must be >= 0 and --limit >= 1")
    chosen = population[offset: offset + limit if limit else None]
    rewording_path = _from_data(rewordings, data, "rewordings")
    texts = load_rewordings(rewording_path, ipip) if rewording_path else None
    prompts_path = _from_data(personality_prompts, data, "personality_prompts")
    persona_texts = (load_personality_prompts(prompts_path, [p.subject_id for p in population])
                     if prompts_path and "personality_prompt" in names else None)
    ks = tuple(int(v) for v in _floats(k, "--k"))
    if palign:
        fit_config, prompt_config = FitConfig.palign(), PromptConfig.palign()
    else:
        fit_config = FitConfig(k=ks[0], k_grid=ks if len(ks) > 1 else (),
                               alpha_grid=_floats(alpha_grid, "--alpha-grid"))
        prompt_config = PromptConfig(read=read)
    model_obj = tokenizer = None
    if needs_model:
        from memalign.models.loading import load_model

        model_obj, tokenizer = load_model(model, dtype=dtype, device=device)
    setup = EvalSetup(ipip, item_split, population, model_obj, tokenizer, texts, prompt_config, fit_config,
                      persona_texts, answering=answering, calibration_l2=calibration_l2)
    config = {"subjects_file": str(subjects_path), "offset": offset, "limit": limit,
              "personality_prompts": (None if "personality_prompt" not in names
                                      else str(prompts_path) if persona_texts is not None else "generated"),
              "dtype": str(model_obj.dtype) if model_obj is not None else None, "threads": torch.get_num_threads()}
    paths = run_eval(setup, names, chosen, out, model if needs_model else None, config, unparsed=unparsed,
                     label=label)
    from memalign.persona.evaluation.report import load_results

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
    from rich.table import Table

    from memalign.persona.evaluation.report import (
        HEADER,
        load_results,
        markdown_table,
        plot_radar,
        plot_trait_errors,
        table_rows,
    )

    results = load_results(dirs)
    table = Table(title="Personality alignment: MAE vs the person's raw answers on held-out items (lower is better)")
    for column in HEADER:
        table.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for row in table_rows(results):
        table.add_row(*row)
    from rich.console import Console

    # a pipe or a log file gets the full table instead of 80 columns of ellipses
    (console if console.is_terminal else Console(width=200, stderr=True)).print(table)
    folder = plots or (dirs[0] if dirs[0].is_dir() else dirs[0].parent)
    folder.mkdir(parents=True, exist_ok=True)
    written = [plot_trait_errors(results, folder / "trait_errors.png")]
    radar = plot_radar(results, folder / "radar.png", subject)
    if radar:
        written.append(radar)
    if markdown:
        markdown.write_text(markdown_table(results) + "\n", encoding="utf-8")
        written.append(markdown)
    console.print("wrote " + ", ".join(map(str, written)), highlight=False)


@persona_app.command("modes")
def modes_cmd() -> None:
    """List the evaluation modes."""
    from memalign.persona.evaluation.modes import MODES

    for name, cls in MODES.items():
        console.print(f"[bold]{name}[/]  {cls.description}" + ("" if cls.needs_model else "  [dim](no model)[/]"),
                      highlight=False)
