"""Command line for datasets: render a synthetic set, check a manifest, convert SROIE.

    python -m vlmsweep.data render --out DIR --n 24 --mix rx_receipt_1_1_1 [--split train --seed 0
        --noise scan --receipt-ratio R --hard-negatives H]
    python -m vlmsweep.data check MANIFEST [--skip-bad-lines --max-seq-len 2048 --visual-tokens 256]
        # every line and every image; a warning for each target too long to train
    python -m vlmsweep.data sroie --root SROIE_DIR --out DIR [--test 0.2]   # DIR/manifest.jsonl [+ train/test]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from vlmsweep.config import DataMixConfig
from vlmsweep.data.build import render_records, split_jobs
from vlmsweep.data.contact import contact_sheet
from vlmsweep.data.manifest import ManifestError, scan_manifest, write_manifest
from vlmsweep.data.mix import PRESET_WEIGHTS
from vlmsweep.data.noise import NOISE_LEVELS
from vlmsweep.data.record import SPLITS
from vlmsweep.data.sroie import load_sroie


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vlmsweep.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render a synthetic dataset: manifest, images, contact sheet")
    r.add_argument("--out", type=Path, required=True, help="folder for manifest.jsonl, the images and contact_sheet.png")
    r.add_argument("--n", type=int, default=24, help="samples to render (default: %(default)s)")
    r.add_argument("--mix", choices=sorted(PRESET_WEIGHTS), default="rx_receipt_1_1_1",
                   help="domain weights, as the data_mix option of a run (default: %(default)s)")
    r.add_argument("--receipt-ratio", type=float, default=None, metavar="R",
                   help="share of receipts in [0, 1]; the rest split by the mix's weights (data_mix.receipt_ratio)")
    r.add_argument("--hard-negatives", type=float, default=0.0, metavar="H",
                   help="share of receipt images asked as a prescription, with an all-null answer (default: 0)")
    r.add_argument("--split", choices=SPLITS, default="train",
                   help="the split's seed stream: the same split and seed draw the same documents as a run's")
    r.add_argument("--seed", type=int, default=0, help="data seed, as data.seed of a run (default: 0)")
    r.add_argument("--noise", choices=NOISE_LEVELS, default="scan", help="scan-noise level (default: %(default)s)")
    c = sub.add_parser("check", help="validate every line and open every image of a manifest; count its domains")
    c.add_argument("manifest", type=Path, help="a JSONL manifest (docs/own-data.md gives its fields)")
    c.add_argument("--skip-bad-lines", action="store_true",
                   help="exit 0 with the bad lines and unusable images listed and counted as skips, as a run "
                        "with data.skip_bad_lines=true counts them (without it: exit 1 if there is any)")
    c.add_argument("--max-seq-len", type=int, default=2048, metavar="TOKENS",
                   help="warn about a sample whose prompt, image and answer exceed this many tokens, as a run with "
                        "train.max_seq_len=TOKENS refuses it (default: %(default)s, the run's default)")
    c.add_argument("--visual-tokens", type=int, default=256, metavar="V",
                   help="visual tokens counted per image for that warning, the run's max_pixels budget "
                        "(default: %(default)s, max_pixels=256tok)")
    s = sub.add_parser("sroie", help="write a manifest for an SROIE download (img/ + key/, the mirror's data/, "
                                     "or the RRC's NAME.jpg + NAME.txt)")
    s.add_argument("--root", type=Path, required=True, help="the SROIE folder (any of the three layouts above)")
    s.add_argument("--out", type=Path, required=True, help="folder for manifest.jsonl (the images stay where they are)")
    s.add_argument("--test", type=float, default=0.0, metavar="FRACTION",
                   help="also write train.jsonl and test.jsonl: this share of the receipts (by sorted id, every "
                        "k-th one) held out for data.test_manifest")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        if a.cmd == "render":
            mix = DataMixConfig(name=a.mix, receipt_ratio=a.receipt_ratio, hard_negatives=a.hard_negatives)
            records = render_records(split_jobs(a.split, a.n, mix, a.seed), a.out, a.noise)
            write_manifest(records, a.out / "manifest.jsonl")
            sheet = contact_sheet(records, a.out / "contact_sheet.png")
            counts = Counter(f"{x.domain}<-{x.image_domain}" if x.domain != x.image_domain else x.domain for x in records)
            print(f"rendered {len(records)} samples {dict(counts)} -> {a.out / 'manifest.jsonl'}; contact sheet {sheet}")
        elif a.cmd == "check":
            return check(a.manifest, a.skip_bad_lines, a.max_seq_len, a.visual_tokens)
        else:
            records = load_sroie(a.root)
            write_manifest(records, a.out / "manifest.jsonl")
            print(f"{len(records)} SROIE receipts -> {a.out / 'manifest.jsonl'} (items, subtotal, tax unannotated)")
            if a.test:
                if not 0 < a.test < 1:
                    raise ValueError(f"--test {a.test}: give the held-out share as a fraction between 0 and 1, e.g. 0.2")
                every = max(2, round(1 / a.test))  # deterministic and spread over the ids: every k-th receipt
                test = records[every - 1::every]
                train = [r for r in records if r not in test]
                write_manifest(train, a.out / "train.jsonl")
                write_manifest(test, a.out / "test.jsonl")
                print(f"{len(train)} -> {a.out / 'train.jsonl'}, {len(test)} -> {a.out / 'test.jsonl'} "
                      f"(data.train_manifest / data.test_manifest)")
    except (ManifestError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def check(manifest: Path, skip_bad_lines: bool, max_seq_len: int = 2048, visual_tokens: int = 256) -> int:
    """Every problem of a manifest (bad lines and unusable images), each with file, line and reason, and a warning
    for each sample too long for training (too_long).

    Exit 0 when all is well, or with --skip-bad-lines (the problems are then counted skips, as a run
    with data.skip_bad_lines=true counts them); 1 otherwise. A warning changes no exit status.
    """
    records, problems = [], []
    count = token_counter()
    for lineno, rec, reason in scan_manifest(manifest, check_images=True):
        if rec is None:
            problems.append(lineno)
            print(f"{manifest}:{lineno}: {reason}")
        else:
            records.append(rec)
            warning = too_long(rec, count, max_seq_len, visual_tokens)
            if warning:
                print(f"{manifest}:{lineno}: warning: {warning}")
    counts = dict(Counter(x.domain for x in records))
    if problems and not skip_bad_lines:
        print(f"{manifest}: {len(problems)} problem(s) in {len(problems) + len(records)} lines; fix them, or count and "
              "skip them (--skip-bad-lines here, data.skip_bad_lines=true in a run)", file=sys.stderr)
        return 1
    if not records:
        print(f"{manifest}: no usable records", file=sys.stderr)
        return 1
    print(f"{manifest}: {len(records)} usable records {counts}, {len(problems)} skipped")
    return 0


def token_counter():
    """Qwen2's token count of a text: tiktoken over the vocabulary the embedded and released models share (the same
    ids as the Qwen2 tokenizer, docs/embedded-model.md), without building a tokenizer or loading a model."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from vlmsweep.model.tokenizer import QWEN2_SPLIT_PATTERN, tiktoken_ranks_file

    encoding = tiktoken.Encoding("qwen2", pat_str=QWEN2_SPLIT_PATTERN,
                                 mergeable_ranks=load_tiktoken_bpe(str(tiktoken_ranks_file())), special_tokens={})
    return lambda text: len(encoding.encode_ordinary(text))


# The chat template around the instruction and the answer (system turn, role markers, vision markers), in tokens.
TEMPLATE_TOKENS = 30


def too_long(rec, count, max_seq_len: int, visual_tokens: int) -> str | None:
    """Why a run with train.max_seq_len=max_seq_len would refuse the sample (None: it fits). The answer as training
    writes it (prompts.serialize, then <|im_end|>), the instruction, the template and the image's visual tokens."""
    from vlmsweep import prompts

    answer = count(prompts.serialize(rec.target)) + 1
    total = answer + count(prompts.instruction(rec.domain, False)) + TEMPLATE_TOKENS + visual_tokens
    if total <= max_seq_len:
        return None
    return (f"the answer alone is {answer} tokens; with the prompt and {visual_tokens} visual tokens, about {total} "
            f"of train.max_seq_len={max_seq_len}: a run refuses it (train.on_truncation=error) or skips it (=skip); "
            "shorten the target, or raise train.max_seq_len (--max-seq-len here)")
