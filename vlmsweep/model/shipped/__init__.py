"""The warmed embedded model as the package ships it, and its assembly into the cache at first use.

`python -m vlmsweep.recipes.warmup` trains the replica for minutes, and another CPU rounds differently, so the trained
tensors ship inside the package (`vlmsweep/model/shipped/`, written by `--ship` from a build) and every machine
assembles the same model from them in seconds. What ships is what the warm-up trained and a run uses: every tensor of
the LLM layers, norm, vision tower and merger, and of the 151,936-row tied embedding only the rows of the tokens the
warm-up's prompts and answers hold. The other rows (74 MiB, random values the warm-up never fed in) all get one
stored vector: the mean of the build's own unused rows. That keeps what the last full-vocabulary steps taught them
(their logits sit below the answer tokens'; the embedding is the output layer too) without torch's random generator,
so the assembled bytes depend on no torch version. The folder is the release's layout, as the raw replica's is
(`vlmsweep.model.tiny.write_release_files`), plus the build's card (README.md) and record (warmup.json).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlmsweep.files import write_json
from vlmsweep.model.cache import build_once, sha256
from vlmsweep.model.tiny import TINY_VERSION, config_json, write_release_files

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent  # this package's data files (pyproject.toml's package-data)
READER_DIR = SHIPPED_DIR / "reader"  # the reader (`model=tiny_reader`, docs/ocr-hint.md): the same files, its own build
WEIGHTS = "tiny_warm.safetensors"  # the trained tensors, float32
CARD_FILES = ("README.md", "warmup.json")  # the build's card and record, copied into the assembled folder
SUMS = "SHA256SUMS"  # `sha256sum -c SHA256SUMS` format, over WEIGHTS and CARD_FILES
EMBED = "model.embed_tokens.weight"  # the release's (4.x) name of the tied embedding
ROWS, VALUES, UNUSED = "shipped.embed_rows", "shipped.embed_values", "shipped.unused_row"
FORMAT = "vlmsweep-shipped-1"  # bump with a change to what the shipped file holds or how it is assembled
REBUILD = "python -m vlmsweep.recipes.warmup --ship"  # writes a new shipped model from a build (minutes)


def pack(build: Path, rows: torch.Tensor, out: Path = SHIPPED_DIR, rebuild: str = REBUILD) -> dict[str, float]:
    """Write the shipped files from a warm-up build (a cache folder of `vlmsweep.recipes.warmup`) into `out`, keeping
    the embedding rows `rows` (token ids), then assemble them and check that every shipped tensor comes back."""
    if json.loads((build / "config.json").read_text(encoding="utf-8")) != config_json("tiny"):
        raise ValueError(f"{build}/config.json is not the tiny replica's: the shipped format assembles that one")
    tensors = load_file(build / "model.safetensors")
    embed = tensors.pop(EMBED)
    rows = torch.unique(rows.long())  # sorted
    unused = torch.ones(len(embed), dtype=torch.bool)
    unused[rows] = False
    tensors |= {ROWS: rows.to(torch.int32), VALUES: embed[rows].clone(), UNUSED: embed[unused].mean(dim=0)}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / WEIGHTS, metadata={"format": FORMAT})
    card = (build / "README.md").read_text(encoding="utf-8")
    (out / "README.md").write_text(card.rstrip("\n") + "\n\n" + shipped_section(len(rows), out / WEIGHTS, rebuild),
                                   encoding="utf-8")
    recorded = json.loads((build / "warmup.json").read_text(encoding="utf-8"))
    recorded["input_vocab"] = rows.tolist()  # the rows that ship (a build from before warm() recorded them lacks them)
    write_json(out / "warmup.json", recorded, indent=1, sort_keys=True, ensure_ascii=True)
    (out / SUMS).write_text("".join(f"{sha256(out / n)}  {n}\n" for n in (WEIGHTS, *CARD_FILES)), encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="vlmsweep-shipped-check-") as check:
        again = load_file(assemble(Path(check), out) / "model.safetensors")
    if again.keys() != {*tensors} - {ROWS, VALUES, UNUSED} | {EMBED} or not torch.equal(again[EMBED][rows], embed[rows]) \
            or not all(torch.equal(again[k], t) for k, t in tensors.items() if k in again):
        raise RuntimeError(f"the files written into {out} do not assemble into {build}'s tensors")
    return {"shipped.mib": (out / WEIGHTS).stat().st_size / 2**20, "shipped.rows": float(len(rows))}


def shipped_section(n_rows: int, weights: Path, rebuild: str = REBUILD) -> str:
    return f"""## As shipped
The package carries this build's trained tensors in `{WEIGHTS}` ({weights.stat().st_size / 2**20:.2f} MiB, float32, as
trained): the LLM layers, norm, vision tower and merger whole, and {n_rows:,} of the tied embedding's 151,936 rows (the tokens
the warm-up's prompts and answers hold). Every other row is one stored vector, the mean of this build's other rows, so
those tokens' logits keep the level the full-vocabulary steps gave them without torch's random generator. A run
assembles the release-layout folder from it into the cache at first use (`vlmsweep.model.shipped`); `{rebuild}`
writes a new one from a build.
"""


def check_shipped(shipped: Path = SHIPPED_DIR) -> None:
    """The package data against its SHA256SUMS: a damaged install is named, never assembled into a wrong model."""
    for line in (shipped / SUMS).read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        if not (shipped / name).is_file() or sha256(shipped / name) != digest:
            raise RuntimeError(f"{shipped / name} does not match {shipped / SUMS}: the installed package is damaged; "
                               f"reinstall vlmsweep (or, in a checkout, `git checkout {shipped}` or `{REBUILD}`)")


def assemble(folder: Path, shipped: Path = SHIPPED_DIR) -> Path:
    """The release-layout model folder from the shipped files: the replica's config, template, processor and
    tokenizer files and a model.safetensors whose unused embedding rows are the stored vector."""
    check_shipped(shipped)
    config = config_json("tiny")
    tensors = load_file(shipped / WEIGHTS)
    rows, values, unused = tensors.pop(ROWS), tensors.pop(VALUES), tensors.pop(UNUSED)
    embed = unused.expand(config["vocab_size"], -1).clone()
    embed[rows.long()] = values
    tensors[EMBED] = embed
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})  # as save_pretrained writes it
    write_release_files(config, folder)
    for name in CARD_FILES:
        shutil.copyfile(shipped / name, folder / name)
    return folder


def shipped_key(shipped: Path = SHIPPED_DIR) -> str:
    """Names the assembled folder: the shipped files' checksums and what assembles them."""
    sums = (shipped / SUMS).read_text(encoding="utf-8")
    return hashlib.sha256(json.dumps([FORMAT, TINY_VERSION, sums]).encode()).hexdigest()[:12]


def ensure_warm_model(cache_dir: Path | str, shipped: Path = SHIPPED_DIR, name: str = "tiny-warm") -> Path:
    """The warmed embedded model (`model=tiny_warm`, the default; or the reader, `ensure_reader_model`), assembled from
    the package data into the cache once and checked before each use (a damaged folder is assembled again)."""
    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    folder = cache_dir / "models" / f"{name}-{shipped_key(shipped)}"

    def write(tmp: Path) -> Path:
        started = time.perf_counter()
        assemble(tmp, shipped)
        log.info("assembled the shipped %s model into %s in %.1f s", name, folder, time.perf_counter() - started)
        return tmp

    return build_once(folder, write, rebuild=f"rm -r {folder}; the next run assembles it")



def ensure_reader_model(cache_dir: Path | str) -> Path:
    """The reader (`model=tiny_reader`): the replica warmed with each page's text in the prompt (docs/ocr-hint.md),
    shipped and assembled as the warmed model is."""
    return ensure_warm_model(cache_dir, READER_DIR, name="tiny-reader")
