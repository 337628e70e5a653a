"""The long-context sweeps whose numbers are in docs/bench.md, as a list of `memalign bench run` commands.

Run from the repository root: ``python benchmarks/longcontext_runs.py --out DIR [--haystack DIR] [--only NAME]
[--prefix grid-]``. The ``grid-*`` steps are the whole published grid with the current driver; the others are
the sweeps as they were added, stop by stop (run them with ``--last-token-in-chunk`` to reproduce the cells
measured before the prompt's last token became its own step). Each step resumes (finished items are skipped),
so the script can be re-run after an interruption.
Sizes are chosen for 2 CPU cores; raise ``--samples`` and lengths on a bigger machine.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

SHARED_HAYSTACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "haystack" / "paul_graham"
# The CLI of the interpreter running this script, so no venv needs to be on PATH.
MEMALIGN = [sys.executable, "-m", "memalign"]
BUDGET = ["--n-init", "128", "--n-local", "2048", "--n-mem", "1024", "--chunk-size", "512"]
TASKS = "passkey,niah_single_1,niah_multikey_1,vt"

STEPS: dict[str, list[str]] = {
    "smollm2-4k": ["-t", TASKS, "--lengths", "4k", "-m", "full,em-llm", "--model", "smollm2-135m-instruct",
                   "--samples", "2", *BUDGET],
    "qwen-4k": ["-t", "passkey", "--lengths", "4k", "-m", "full,em-llm", "--model", "qwen2.5-coder-0.5b-instruct",
                "--samples", "2", *BUDGET],
    "smollm2-8k": ["-t", TASKS, "--lengths", "8k", "-m", "full,em-llm", "--model", "smollm2-135m-instruct",
                   "--samples", "2", *BUDGET],
    "smollm2-baselines": ["-t", "passkey,niah_single_1", "--lengths", "4k,8k", "-m", "infllm,streaming",
                          "--model", "smollm2-135m-instruct", "--samples", "2", *BUDGET],
    "smollm2-16k": ["-t", "passkey", "--lengths", "16k", "-m", "em-llm,full", "--model", "smollm2-135m-instruct",
                    "--samples", "2", *BUDGET],
    "smollm2-variants": ["-t", "niah_single_1,passkey", "--lengths", "8k", "-m",
                         "em-llm+refine,em-llm+contiguity,em-llm+refine+contiguity",
                         "--model", "smollm2-135m-instruct", "--samples", "2", "--threads", "1", *BUDGET],
    "smollm2-16k-methods": ["-t", "passkey", "--lengths", "16k", "-m", "em-llm,infllm,streaming,full",
                            "--model", "smollm2-135m-instruct", "--samples", "2", "--threads", "1", *BUDGET],
    "smollm2-16k-niah": ["-t", "niah_single_1", "--lengths", "16k", "-m", "em-llm,infllm,streaming,full",
                         "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-16k-methods": ["-t", "passkey", "--lengths", "16k", "-m", "infllm,streaming,em-llm,full",
                         "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-32k-methods": ["-t", "passkey,niah_single_1", "--lengths", "32k", "-m", "em-llm,infllm,streaming,full",
                            "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-64k-memory": ["-t", "passkey", "--lengths", "64k", "-m", "em-llm,infllm",
                           "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-32k-methods": ["-t", "passkey", "--lengths", "32k", "-m", "em-llm,full",
                         "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-64k-memory": ["-t", "passkey", "--lengths", "64k", "-m", "em-llm",
                        "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-8k-methods": ["-t", "passkey,niah_single_1", "--lengths", "8k", "-m", "em-llm,infllm,streaming,full",
                           "--model", "smollm2-135m-instruct", "--samples", "4", "--threads", "1", *BUDGET],
    "smollm2-8k-ruler": ["-t", "niah_multikey_1,vt", "--lengths", "8k", "-m", "em-llm,infllm,streaming,full",
                         "--model", "smollm2-135m-instruct", "--samples", "2", "--threads", "1", *BUDGET],
    "smollm2-16k-ruler": ["-t", "niah_multikey_1,vt", "--lengths", "16k", "-m", "em-llm,infllm,streaming,full",
                          "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-8k-ruler": ["-t", "niah_single_1,niah_multikey_1,vt", "--lengths", "8k", "-m",
                      "em-llm,infllm,streaming,full", "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1",
                      "--threads", "1", *BUDGET],
    "smollm2-niah-5": ["-t", "niah_single_1", "--lengths", "8k", "-m", "em-llm,infllm,streaming,full",
                       "--model", "smollm2-135m-instruct", "--samples", "5", "--threads", "1", *BUDGET],
    "smollm2-niah-5-d512": ["-t", "niah_single_1", "--lengths", "8k", "-m", "em-llm", "--memory-distance", "512",
                            "--model", "smollm2-135m-instruct", "--samples", "5", "--threads", "1", *BUDGET],
    "smollm2-16k-variants": ["-t", "niah_single_1", "--lengths", "16k", "-m",
                             "em-llm+refine+contiguity",
                             "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-8k-passkey": ["-t", "passkey", "--lengths", "8k", "-m", "em-llm,infllm,streaming,full",
                        "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-8k-d512": ["-t", "niah_single_1", "--lengths", "8k", "-m", "em-llm", "--memory-distance", "512",
                     "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-32k-baselines": ["-t", "passkey", "--lengths", "32k", "-m", "infllm,streaming",
                           "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-32k-ruler": ["-t", "niah_multikey_1,vt", "--lengths", "32k", "-m", "em-llm,infllm,streaming",
                          "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-64k-niah": ["-t", "niah_single_1", "--lengths", "64k", "-m", "em-llm,infllm,streaming",
                         "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-16k-niah": ["-t", "niah_single_1", "--lengths", "16k", "-m", "em-llm,infllm,streaming",
                      "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-32k-niah": ["-t", "niah_single_1", "--lengths", "32k", "-m", "em-llm,infllm,streaming",
                      "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-64k-streaming": ["-t", "passkey", "--lengths", "64k", "-m", "streaming",
                              "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-16k-ruler": ["-t", "vt,niah_multikey_1", "--lengths", "16k", "-m", "em-llm,infllm,streaming",
                       "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-4k-baselines": ["-t", TASKS, "--lengths", "4k", "-m", "infllm,streaming",
                             "--model", "smollm2-135m-instruct", "--samples", "2", "--threads", "1", *BUDGET],
    "qwen-4k-ruler": ["-t", TASKS, "--lengths", "4k", "-m", "em-llm,infllm,streaming,full",
                      "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "2", "--threads", "1", *BUDGET],
    "smollm2-64k-ruler": ["-t", "niah_multikey_1,vt", "--lengths", "64k", "-m", "em-llm,infllm,streaming",
                          "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-32k-ruler": ["-t", "niah_multikey_1,vt", "--lengths", "32k", "-m", "em-llm,infllm,streaming",
                       "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-16k-full": ["-t", "niah_single_1,niah_multikey_1,vt", "--lengths", "16k", "-m", "full",
                      "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-64k-niah": ["-t", "niah_single_1", "--lengths", "64k", "-m", "em-llm",
                      "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-64k-methods": ["-t", "passkey,niah_single_1", "--lengths", "64k", "-m", "em-llm,infllm,streaming",
                         "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-64k-multikey": ["-t", "niah_multikey_1", "--lengths", "64k", "-m", "em-llm,infllm,streaming",
                          "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-64k-vt": ["-t", "vt", "--lengths", "64k", "-m", "em-llm,infllm,streaming",
                    "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-64k-full": ["-t", "passkey", "--lengths", "64k", "-m", "full",
                      "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "qwen-32k-full-ruler": ["-t", "niah_single_1,niah_multikey_1,vt", "--lengths", "32k", "-m", "full",
                            "--model", "qwen2.5-coder-0.5b-instruct", "--samples", "1", "--threads", "1", *BUDGET],
    "smollm2-32k-full-ruler": ["-t", "niah_multikey_1,vt", "--lengths", "32k", "-m", "full",
                               "--model", "smollm2-135m-instruct", "--samples", "1", "--threads", "1", *BUDGET],
}

ALL_TASKS = "passkey,niah_single_1,niah_multikey_1,vt"


def _grid_steps() -> dict[str, list[str]]:
    """The whole published grid with the current driver (the prompt's last token its own step): both
    models, the four tasks, 4k..64k, memory methods first, then streaming, then full attention (last: one
    64k ``full`` item costs about ten memory-method items on a CPU).
    Sample counts are those of the earlier cells, so items pair one to one in the head-to-head."""
    common = ["--threads", "1", *BUDGET]
    smol, qwen = ["--model", "smollm2-135m-instruct"], ["--model", "qwen2.5-coder-0.5b-instruct"]
    steps: dict[str, list[str]] = {}
    for group, methods in (("memory", "em-llm,infllm"), ("streaming", "streaming"), ("full", "full")):
        cells = [
            ("smollm2-8k-niah", "niah_single_1", "8k", smol, "5"),
            ("smollm2-8k-passkey", "passkey", "8k", smol, "4"),
            ("smollm2-8k-ruler", "niah_multikey_1,vt", "8k", smol, "2"),
            ("smollm2-16k-passkey", "passkey", "16k", smol, "2"),
            ("smollm2-16k-ruler", "niah_single_1,niah_multikey_1,vt", "16k", smol, "1"),
            ("smollm2-32k", ALL_TASKS, "32k", smol, "1"),
            ("smollm2-64k", ALL_TASKS, "64k", smol, "1"),
            ("smollm2-4k", ALL_TASKS, "4k", smol, "2"),
            ("qwen-8k-32k", ALL_TASKS, "8k,16k,32k", qwen, "1"),
            ("qwen-64k", ALL_TASKS, "64k", qwen, "1"),
            ("qwen-4k", ALL_TASKS, "4k", qwen, "2"),
        ]
        for name, tasks, lengths, model, samples in cells:
            steps[f"grid-{group}-{name}"] = ["-t", tasks, "--lengths", lengths, "-m", methods, *model,
                                             "--samples", samples, *common]
    # EM-LLM's variants where the grid separates methods: SmolLM2's 8k retrieval cells, Qwen's variable
    # tracking (EM-LLM's wins over InfLLM); and the 512-token memory distance on the 8k needle.
    variants = "em-llm+refine,em-llm+contiguity,em-llm+refine+contiguity"
    for name, tasks, lengths, model, samples, methods in (
            ("variants-smollm2-8k-niah", "niah_single_1", "8k", smol, "5", variants),
            ("variants-smollm2-8k-passkey", "passkey", "8k", smol, "4", variants),
            ("variants-qwen-4k-vt", "vt", "4k", qwen, "2", variants),
            ("variants-qwen-vt", "vt", "8k,16k,32k", qwen, "1", variants),
            ("distance-smollm2-8k-niah", "niah_single_1", "8k", smol, "5", "em-llm"),
            ("distance-qwen-8k-niah", "niah_single_1", "8k", qwen, "1", "em-llm")):
        extra = ["--memory-distance", "512"] if name.startswith("distance") else []
        steps[f"grid-{name}"] = ["-t", tasks, "--lengths", lengths, "-m", methods, *model, "--samples", samples,
                                 *extra, *common]
    return steps


GRID = _grid_steps()
STEPS.update(GRID)
# SmolLM2's 4k-16k memory cells again with the earlier driver, so the report pairs the two drivers item by item.
STEPS.update({f"driver-check-{cell}": [*GRID[f"grid-memory-smollm2-{cell}"], "--last-token-in-chunk"]
              for cell in ("8k-niah", "8k-passkey", "8k-ruler", "16k-passkey", "16k-ruler", "4k")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--haystack", type=Path, default=SHARED_HAYSTACK)
    parser.add_argument("--only", choices=list(STEPS), action="append")
    parser.add_argument("--prefix", help="run the steps whose name starts with this, e.g. grid- (the current grid)")
    parser.add_argument("--last-token-in-chunk", action="store_true",
                        help="the driver of the cells published before the last prompt token became its own "
                             "step (their result folders lack the -lt suffix)")
    args = parser.parse_args()
    for name, step in STEPS.items():
        if args.only and name not in args.only:
            continue
        if args.prefix and not name.startswith(args.prefix):
            continue
        cmd = [*MEMALIGN, "bench", "run", *step, "--out", str(args.out)]
        if args.haystack.is_dir():  # only the essay tasks need it; `bench run` refuses a missing folder
            cmd += ["--haystack", str(args.haystack)]
        if args.last_token_in_chunk and "--last-token-in-chunk" not in cmd:
            cmd.append("--last-token-in-chunk")  # `full` ignores it; steps mix full and memory methods
        print(f"== {name}: {shlex.join(cmd)}", flush=True)
        code = subprocess.run(cmd).returncode
        if code:
            print(f"== {name} failed with exit code {code}", flush=True)
    subprocess.run([*MEMALIGN, "bench", "report", str(args.out), "--markdown", str(args.out / "table.md")])


if __name__ == "__main__":
    sys.exit(main())
