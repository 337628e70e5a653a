"""PAS smoke benchmark: does a person's steering move the model's answers on held-out items toward them?

For the first N subjects of PAlign's PAPI test set: fit a steering on the 120 IPIP-NEO-120 training items
(strength, and optionally K, by cross-validation on those items only), then score the 180 held-out
IPIP-NEO-300 items unsteered and steered, from the option-token probabilities, against the person's raw
answers. Prints one row per subject and writes the numbers as JSON.

    python benchmarks/persona_smoke.py --model qwen2.5-coder-0.5b-instruct --subjects 5
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from memalign import load_model
from memalign.persona import (
    FitConfig,
    PersonaAligner,
    PromptConfig,
    QuestionnaireSession,
    load_answers,
    load_ipip_neo_300,
    load_rewordings,
    load_split,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "papi"


def trait_mae_sum(errors: dict[int, float], domain_of: dict[int, str]) -> float:
    """PAlign's Table-1 metric: per-domain mean absolute error, summed over the five domains."""
    by_domain: dict[str, list[float]] = {}
    for item_id, err in errors.items():
        by_domain.setdefault(domain_of[item_id], []).append(err)
    return sum(statistics.fmean(v) for v in by_domain.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with the PAPI files")
    parser.add_argument("--subjects", type=int, default=5, help="first N subjects of subjects_200.json")
    parser.add_argument("--positions", default="generated", choices=["generated", "all"])
    parser.add_argument("--k", default="24,64", help="K, or comma-separated K values chosen by CV")
    parser.add_argument("--alpha-grid", default="-4,-2,-1,0,1,2,4,6,8")
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--prediction", default="expected", choices=["expected", "argmax"])
    parser.add_argument(
        "--read",
        default="decision",
        choices=["answer", "decision"],
        help="read heads at the answer token (PAS) or at the position predicting it",
    )
    parser.add_argument(
        "--palign", action="store_true", help="PAlign's settings: read answer, K 24, alpha 0,1,2,4,6,8, positions all"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=160)

    ipip = load_ipip_neo_300(args.data / "ipip_neo_300_itemkey.csv")
    split = load_split(args.data / "mpi_300_split.json", ipip)
    rewordings = load_rewordings(args.data / "mpi_120.csv", ipip)
    subjects = load_answers(args.data / "subjects_200.json", ipip, recoded=True)[: args.subjects]
    ks = tuple(int(k) for k in args.k.split(",") if k)
    config = FitConfig(
        k=ks[0],
        k_grid=ks if len(ks) > 1 else (),
        alpha_grid=tuple(float(a) for a in args.alpha_grid.split(",")),
        cv_folds=args.cv_folds,
        positions=args.positions,
        prediction=args.prediction,
    )
    prompts = PromptConfig(read=args.read)
    if args.palign:
        config, prompts = FitConfig.palign(cv_folds=args.cv_folds, prediction=args.prediction), PromptConfig.palign()

    model, tokenizer = load_model(args.model, dtype=args.dtype)
    start = time.perf_counter()
    aligner = PersonaAligner(
        model,
        tokenizer,
        ipip.subset(split.train).items,
        prompt_config=prompts,
        fit_config=config,
        rewordings=rewordings,
    ).prepare()
    test = QuestionnaireSession(model, tokenizer, ipip.subset(split.test).items, prompts, rewordings=rewordings)
    unsteered = test.score()
    prepare_s = time.perf_counter() - start
    domain_of = {item.full_id: item.domain for item in ipip}

    rows = []
    for subject in subjects:
        result = aligner.fit(subject)  # sees the 120 training answers only
        start = time.perf_counter()
        steered = test.score(result.steering)
        eval_s = time.perf_counter() - start
        raw_test = {i: subject.raw_answer(i) for i in split.test}
        base_err = unsteered.abs_errors(raw_test, args.prediction)
        steer_err = steered.abs_errors(raw_test, args.prediction)
        rows.append(
            {
                "subject": subject.subject_id,
                "k": result.k,
                "alpha": result.alpha,
                "cv_unsteered": result.unsteered_cv_mae,
                "cv_best": result.best_cv_mae,
                "test_unsteered_mae": statistics.fmean(base_err.values()),
                "test_steered_mae": statistics.fmean(steer_err.values()),
                "test_unsteered_trait_sum": trait_mae_sum(base_err, domain_of),
                "test_steered_trait_sum": trait_mae_sum(steer_err, domain_of),
                "steered_option_mass": float(steered.mass.mean()),
                "fit_s": result.seconds,
                "fit_cpu_s": result.cpu_seconds,
                "eval_s": eval_s,
                "cv_table": result.cv_table(),
                "heads": [list(h) for h in result.steering.heads],
            }
        )

    table = Table(
        title=f"PAS on {args.model} ({model.dtype}, positions={config.positions}, read={prompts.read}, "
        f"{torch.get_num_threads()} threads): MAE vs raw answers on the 180 held-out items"
    )
    for col in (
        "subject",
        "K",
        "alpha",
        "CV MAE unsteered",
        "CV MAE chosen",
        "test MAE unsteered",
        "test MAE steered",
        "trait-sum unsteered",
        "trait-sum steered",
        "fit s",
        "fit CPU s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["subject"],
            str(r["k"]),
            f"{r['alpha']:g}",
            f"{r['cv_unsteered']:.3f}",
            f"{r['cv_best']:.3f}",
            f"{r['test_unsteered_mae']:.3f}",
            f"{r['test_steered_mae']:.3f}",
            f"{r['test_unsteered_trait_sum']:.2f}",
            f"{r['test_steered_trait_sum']:.2f}",
            f"{r['fit_s']:.1f}",
            f"{r['fit_cpu_s']:.1f}",
        )
    mean = {key: statistics.fmean(r[key] for r in rows) for key in rows[0] if isinstance(rows[0][key], float)}
    table.add_row(
        "mean",
        "",
        "",
        f"{mean['cv_unsteered']:.3f}",
        f"{mean['cv_best']:.3f}",
        f"{mean['test_unsteered_mae']:.3f}",
        f"{mean['test_steered_mae']:.3f}",
        f"{mean['test_unsteered_trait_sum']:.2f}",
        f"{mean['test_steered_trait_sum']:.2f}",
        f"{mean['fit_s']:.1f}",
        f"{mean['fit_cpu_s']:.1f}",
    )
    console.print(table)
    helped = sum(r["test_steered_mae"] < r["test_unsteered_mae"] for r in rows)
    console.print(
        f"steering lowered the held-out MAE for {helped}/{len(rows)} subjects; one-time preparation "
        f"(encode + capture, cached on disk afterwards) {prepare_s:.0f} s; unsteered option mass "
        f"{float(unsteered.mass.mean()):.2f}, steered {mean['steered_option_mass']:.2f}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "fit_config": config.to_dict(),
            "prompt_config": prompts.to_dict(),
            "prepare_s": prepare_s,
            "rows": rows,
            "mean": {k: (v if math.isfinite(v) else None) for k, v in mean.items()},
        }
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
