"""``memalign persona ...``: personality alignment (PAS) commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from memalign.cli import app
from memalign.cli.display import console
from memalign.errors import ConfigError

persona_app = typer.Typer(help="Personality alignment (PAS): quiz, align, evaluate.", no_args_is_help=True)
app.add_typer(persona_app, name="persona")

ITEM_KEY_HELP = (
    "IPIP-NEO item key CSV (columns full_id, short_id, sign, facet, text; e.g. PAlign's PAPI ipip_neo_300_itemkey.csv)"
)
SCALE = {
    1: "Very Inaccurate",
    2: "Moderately Inaccurate",
    3: "Neither Accurate Nor Inaccurate",
    4: "Moderately Accurate",
    5: "Very Accurate",
}


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str, name: str) -> tuple[int, ...]:
    """Comma-separated whole numbers, at least one (``--k 2.5`` is refused, not rounded)."""
    values = _floats(text, name)
    if not values or any(not v.is_integer() or v < 1 for v in values):
        raise ConfigError(f"{name} must be comma-separated whole numbers >= 1, got {text!r}")
    return tuple(int(v) for v in values)


@persona_app.command()
def quiz(
    out: Path = typer.Option(..., "--out", "-o", help="answers file to write (JSON, accepted by `align --answers`)"),
    item_key: Path = typer.Option(..., "--item-key", help=ITEM_KEY_HELP),
    rewordings: Path | None = typer.Option(None, help="second-person item texts (e.g. MPI's mpi_120.csv)"),
    name: str = typer.Option("me", help="subject id stored in the file"),
    full: bool = typer.Option(False, "--full", help="all 300 items (IPIP-NEO-300) instead of the 120"),
) -> None:
    """Answer the IPIP-NEO-120 (or -300) in the terminal, 1-5; empty line skips an item, q stops."""
    from memalign.persona import SubjectAnswers, answers_document, load_ipip_neo_300, load_rewordings
    from memalign.persona.prompts import statement_text

    ipip = load_ipip_neo_300(item_key)
    instrument = ipip if full else ipip.short_form()
    texts = load_rewordings(rewordings, ipip) if rewordings else {}
    console.print(
        f"{instrument.name}: {len(instrument)} statements. How accurately does each describe you?\n"
        + "  ".join(f"[bold]{k}[/] {v}" for k, v in SCALE.items())
        + "\n[dim]Enter skips a statement, q stops (the rest is left unanswered).[/]",
        highlight=False,
    )
    raw: dict[int, int | None] = {item.full_id: None for item in instrument}
    for n, item in enumerate(instrument, start=1):
        statement = statement_text(item, texts.get(item.full_id))
        while True:
            try:
                reply = console.input(f"[{n}/{len(instrument)}] You {statement}. [1-5] ").strip().lower()
            except EOFError:
                reply = "q"
            if reply in {"", "q"} or (reply.isdigit() and int(reply) in SCALE):
                break
            console.print("  please type 1, 2, 3, 4 or 5 (Enter skips, q stops)")
        if reply == "q":
            break
        raw[item.full_id] = int(reply) if reply else None
    answered = sum(v is not None for v in raw.values())
    document = answers_document([SubjectAnswers(name, raw)], instrument)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    console.print(f"wrote {out} ({answered}/{len(instrument)} answered)")


@persona_app.command()
def align(
    model: str = typer.Option(..., "--model", "-m", help="preset, .gguf, local dir or hub id"),
    answers: Path = typer.Option(..., help="answers file (PAPI JSON, CSV, or written by `persona quiz`)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the steering (safetensors + JSON)"),
    item_key: Path = typer.Option(..., "--item-key", help=ITEM_KEY_HELP),
    subject: str = typer.Option("0", help="subject id (case/id) or 0-based index in the file"),
    split: Path | None = typer.Option(None, help="PAlign split JSON (train_index); default: the 120 short-form items"),
    rewordings: Path | None = typer.Option(None, help="second-person item texts (e.g. MPI's mpi_120.csv)"),
    recoded: bool | None = typer.Option(
        None,
        "--recoded/--raw",
        help="reverse-keyed answers already recoded "
        "(PAPI/Johnson data) or as ticked; needed unless the file declares it",
    ),
    k: str = typer.Option("24,64", help="number of steered heads; several (comma-separated): chosen by CV"),
    alpha_grid: str = typer.Option("-4,-2,-1,0,1,2,4,6,8", help="strengths tried by cross-validation"),
    positions: str = typer.Option("generated", help="generated (new tokens only) or all (PAlign's bias)"),
    read: str = typer.Option(
        "decision", help="read heads where the answer is predicted (decision) or at the answer token (answer, PAlign)"
    ),
    palign: bool = typer.Option(
        False,
        "--palign",
        help="PAlign's settings: read answer, K 24, alpha 0,1,2,4,6,8, "
        "positions all (overrides --k/--alpha-grid/--positions/--read)",
    ),
    cv_folds: int = typer.Option(5, help="cross-validation folds over the training items"),
    seed: int = typer.Option(0),
    dtype: str = typer.Option("auto", help="auto, bf16, fp32 or fp16"),
    device: str = typer.Option("cpu"),
    cache: bool = typer.Option(True, help="cache prompt encodings and activations on disk"),
) -> None:
    """Fit a person's steering (PAS) on their training-item answers; strength chosen by cross-validation."""
    from rich.table import Table

    from memalign.models.loading import load_model
    from memalign.persona import (
        FitConfig,
        PersonaAligner,
        PromptConfig,
        find_subject,
        load_answers,
        load_ipip_neo_300,
        load_rewordings,
        load_split,
        save_steering,
    )

    ks = _ints(k, "--k")
    if palign:
        config, prompts = FitConfig.palign(cv_folds=cv_folds, seed=seed), PromptConfig.palign()
    else:
        config = FitConfig(
            k=ks[0],
            k_grid=ks if len(ks) > 1 else (),
            alpha_grid=_floats(alpha_grid, "--alpha-grid"),
            positions=positions,
            cv_folds=cv_folds,
            seed=seed,
        )
        prompts = PromptConfig(read=read)
    ipip = load_ipip_neo_300(item_key)
    train = load_split(split, ipip).train if split else ipip.short_form().ids
    person = find_subject(load_answers(answers, ipip, recoded=recoded, required_items=train), subject)
    texts = load_rewordings(rewordings, ipip) if rewordings else None
    model_obj, tokenizer = load_model(model, dtype=dtype, device=device)
    start = time.perf_counter()
    aligner = PersonaAligner(
        model_obj,
        tokenizer,
        ipip.subset(train).items,
        instrument=ipip.name,
        prompt_config=prompts,
        fit_config=config,
        rewordings=texts,
        cache=cache,
    ).prepare()
    prepared = time.perf_counter() - start
    result = aligner.fit(person)
    save_steering(result.steering, out)

    table = Table(title=f"subject {person.subject_id}: {result.k} heads (layer, head) by held-out probe accuracy")
    for column in ("layer", "head", "probe acc", "std"):
        table.add_column(column, justify="right")
    for (layer, head), acc, std in zip(
        result.steering.heads, result.head_accuracy, result.steering.stds.tolist(), strict=True
    ):
        table.add_row(str(layer), str(head), f"{acc:.2f}", f"{std:.3f}")
    console.print(table)
    console.print(
        f"alpha {result.alpha:g} (K {result.k}, positions {config.positions}): CV MAE on held-out training items "
        f"{result.best_cv_mae:.3f} vs {result.unsteered_cv_mae:.3f} unsteered "
        f"({result.n_scored} answered, {result.n_labeled} non-neutral of {len(train)} items)\n"
        f"fit {result.seconds:.1f} s (+ {prepared:.1f} s encoding/capture, cached for the next subject)\n"
        f"saved {out}  -> memalign chat --model {model} --persona {out}",
        highlight=False,
    )


@persona_app.command()
def bake(
    model: str = typer.Option(..., "--model", "-m", help="the model the steering was fit on"),
    steering: Path = typer.Option(..., help="steering directory written by `persona align`"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for the Hugging Face checkpoint"),
    alpha: float | None = typer.Option(None, help="strength (default: the fitted one)"),
    as_llama: bool = typer.Option(
        False,
        "--as-llama",
        help="write a Qwen2/Mistral model as the equivalent Llama checkpoint (their o_proj cannot carry a bias)",
    ),
    dtype: str = typer.Option("auto"),
) -> None:
    """Fold a steering (positions=all) into o_proj biases and save a checkpoint that reloads with it."""
    from memalign.models.loading import load_model
    from memalign.persona import bake as bake_steering
    from memalign.persona import load_steering

    model_obj, tokenizer = load_model(model, dtype=dtype)
    loaded = load_steering(steering, model_obj)
    bake_steering(model_obj, loaded, out, tokenizer=tokenizer, alpha=alpha, as_llama=as_llama)
    console.print(f"wrote {out} (load it with transformers' from_pretrained; no memalign needed)")
