"""Optional download of the official suite files from the Hugging Face hub (no ``datasets`` needed)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from memalign.bench.loaders import infinitebench, longbench
from memalign.errors import ConfigError, DataError


def download_suite(suite: str, dest: Path) -> list[Path]:
    from huggingface_hub import hf_hub_download

    dest.mkdir(parents=True, exist_ok=True)
    try:
        if suite == "longbench":
            archive = Path(hf_hub_download("THUDM/LongBench", "data.zip", repo_type="dataset"))
            wanted = {f"data/{task}.jsonl" for task in longbench.SPECS}
            written = []
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member in wanted:
                        target = dest / Path(member).name
                        target.write_bytes(zf.read(member))
                        written.append(target)
            return written
        if suite == "infinitebench":
            return [
                Path(
                    hf_hub_download(
                        "xinrongzhang2022/InfiniteBench", f"{task}.jsonl", repo_type="dataset", local_dir=dest
                    )
                )
                for task in infinitebench.SPECS
            ]
    except (OSError, ValueError) as exc:  # hub errors subclass these (HTTP, offline mode, missing file)
        hint = longbench.HINT if suite == "longbench" else infinitebench.HINT
        raise DataError(
            f"could not download {suite} from the Hugging Face hub ({exc}). Put the official "
            f".jsonl files in {dest} yourself: {hint}"
        ) from None
    raise ConfigError(f"unknown suite {suite!r}; use longbench or infinitebench")
