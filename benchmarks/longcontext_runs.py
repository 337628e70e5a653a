"""The long-context sweeps whose numbers are in docs/bench.md, as a list of `memalign bench run` commands.

Run from the repository root: ``python benchmarks/longcontext_runs.py --out DIR [--haystack DIR] [--only NAME]``.
Each step resumes (finished items are skipped), so the script can be re-run after an interruption.
Sizes are chosen for 2 CPU cores; raise ``--samples`` and lengths on a bigger machine.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

SHARED_HAYSTACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "haystack" / "paul_graham"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--haystack", type=Path, default=SHARED_HAYSTACK)
    parser.add_argument("--only", choices=list(STEPS), action="append")
    args = parser.parse_args()
    for name, step in STEPS.items():
        if args.only and name not in args.only:
            continue
        cmd = ["memalign", "bench", "run", *step, "--out", str(args.out), "--haystack", str(args.haystack)]
        print(f"== {name}: {shlex.join(cmd)}", flush=True)
        code = subprocess.run(cmd).returncode
        if code:
            print(f"== {name} failed with exit code {code}", flush=True)
    subprocess.run(["memalign", "bench", "report", str(args.out), "--markdown", str(args.out / "table.md")])


if __name__ == "__main__":
    sys.exit(main())
