"""Benchmark: the reader (`model=tiny_reader`) on the axes a reader makes measurable, with the report's own statistics over seeds.

    HF_HUB_OFFLINE=1 python benchmarks/bench_reader.py [--seeds 3] [--engine tesseract] [--out bench_reader]
                                                        [--only hint budget loop]

Each part is the command a user types, run through the command line from a folder outside the checkout (resumable:
a part whose multirun finished is read again, not rerun):

- **hint**: `python -m vlmsweep -m model=tiny_reader ocr_hint=none,ENGINE seed=0,1,2`: does the answer depend on the
  page once its text is in the prompt? Each run's chance baseline (content.field_em_margin and its randomization p,
  vlmsweep.evaluate.grounding) and the report's effect of ocr_hint with its 95% interval over test samples and seeds;
  then field EM field by field (list indices pooled: `items[].name`; `items[+].name` for items written beyond the target's list), per `ocr_hint` value over every seed's samples,
  to show which fields the text gives the reader.
- **budget**: `python -m vlmsweep -m model=tiny_reader ocr_hint=ENGINE ocr_hint.resolution=budget
  max_pixels=64tok,256tok seed=0,1,2`: the visual-token budget's effect, which here is the OCR engine's (it reads the
  page as resized to the budget), not Qwen2-VL's.
- **loop**: `python -m vlmsweep model=tiny_reader ocr_hint=ENGINE loop.cycles=2`: the targeted tag's change against
  the seed-noise band, as the loop's cycle report states it.

Prints markdown tables and the machine; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multirun import REPO, cli_env, has_runs, machine, machine_line, run_multirun  # noqa: E402

sys.path.insert(0, str(REPO))
METRICS = ["content.field_em", "content.field_em_margin", "contract.strict_parse_rate"]


def runs_table(sweep: Path) -> list[dict]:
    """Per run: its overrides, field EM, margin, the randomization p of its chance baseline and how many distinct
    answers it wrote for its test pages (a model that ignores the page writes few)."""
    from vlmsweep.evaluate.grounding import randomization_test

    rows = []
    for run in sorted((p for p in sweep.iterdir() if (p / "metrics.json").is_file()), key=lambda p: int(p.name)):
        m = json.loads((run / "metrics.json").read_text())
        info = json.loads((run / "run_info.json").read_text())
        samples = [json.loads(line) for line in (run / "samples.jsonl").open(encoding="utf-8")]
        test = randomization_test(samples)
        rows.append({"run": " ".join(o for o in info.get("overrides", []) if not o.startswith("hydra")),
                     "strict_parse": m.get("contract.strict_parse_rate"), "field_em": m.get("content.field_em"),
                     "margin": m.get("content.field_em_margin"), "p": test.p_value if test else None,
                     "ocr_s": m.get("cost.ocr_seconds_per_image"),
                     "distinct": len({s["raw"] for s in samples}), "pages": len(samples)})
    return rows


def fields_table(sweep: Path, axis: str = "ocr_hint") -> dict[str, dict[str, tuple[float, int]]]:
    """Field -> value of AXIS -> (mean field EM over every run's scored samples with that value, how many scores), list
    indices pooled: `medications[2].dose` counts as `medications[].dose`, and an item the model wrote beyond the
    target's list (`medications[+3].dose`, scored 0, vlmsweep.evaluate.fields) as `medications[+].dose`."""
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(p for p in sweep.iterdir() if (p / "samples.jsonl").is_file()):
        value = json.loads((run / "run_info.json").read_text())["choices"][axis]
        for line in (run / "samples.jsonl").open(encoding="utf-8"):
            for name, score in (json.loads(line).get("field_scores") or {}).items():
                scores[re.sub(r"\[(\+?)\d+\]", r"[\1]", name)][value].append(score)
    return {name: {v: (sum(s) / len(s), len(s)) for v, s in by_value.items()} for name, by_value in sorted(scores.items())}


def print_fields(table: dict[str, dict[str, tuple[float, int]]]) -> None:
    values = sorted({v for by_value in table.values() for v in by_value})
    print("\n| field | " + " | ".join(f"field EM, {v} (scores)" for v in values) + " |\n|---|" + "---|" * len(values))
    for name, by_value in table.items():
        cells = [f"{by_value[v][0]:.2f} ({by_value[v][1]})" if v in by_value else "–" for v in values]
        print(f"| `{name}` | " + " | ".join(cells) + " |")


def effects(sweep: Path) -> list[dict]:
    from vlmsweep.report.build import analyse, effect_records

    return [e for e in effect_records(analyse(sweep, metrics=METRICS)) if e["effect"] != "seed"]


def print_part(title: str, rows: list[dict], found: list[dict]) -> None:
    fmt = lambda v, f="+.3f": "–" if v is None else format(v, f)  # noqa: E731
    print(f"\n## {title}\n\n| run | strict parse | field EM | margin | p | OCR s/page | distinct answers |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {fmt(r['strict_parse'], '.3f')} | {fmt(r['field_em'], '.3f')} | {fmt(r['margin'])} | "
              f"{fmt(r['p'], '.4f')} | {fmt(r['ocr_s'], '.2f')} | {r['distinct']} of {r['pages']} |")
    print("\n| effect | metric | estimate | 95% interval | verdict | seeds |\n|---|---|---|---|---|---|")
    for e in found:
        print(f"| {e['effect']} ({e['contrast']}) | {e['metric']} | {e['estimate']:+.4f} | {e['interval']} | "
              f"{e['verdict']} | {e['seeds_per_cell']} |")


def loop_part(out: Path, engine: str) -> dict:
    import subprocess

    run = out / "loop"
    started, ran = time.perf_counter(), False
    if not (run / "report.md").is_file():
        ran = True
        cmd = [sys.executable, "-m", "vlmsweep", "model=tiny_reader", f"ocr_hint={engine}", "loop.cycles=2",
               "tracker=none", f"hydra.run.dir={run}"]
        print("running:", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=out, env=cli_env(), stdout=subprocess.DEVNULL)
    report = run / "report.md"
    print(f"\n## loop (model=tiny_reader ocr_hint={engine} loop.cycles=2)\n")
    print(report.read_text(encoding="utf-8") if report.is_file() else f"(no report.md in {run})")
    return {"folder": str(run), "seconds": time.perf_counter() - started if ran else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--engine", default="tesseract", choices=("tesseract", "rapidocr"))
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--only", nargs="+", default=["hint", "budget", "loop"], choices=("hint", "budget", "loop"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="bench-reader-"))).resolve()
    seeds = "seed=" + ",".join(map(str, range(args.seeds)))
    parts = {
        "hint": ["model=tiny_reader", f"ocr_hint=none,{args.engine}", seeds],
        "budget": ["model=tiny_reader", f"ocr_hint={args.engine}", "ocr_hint.resolution=budget",
                   "max_pixels=64tok,256tok", seeds],
    }
    figures: dict = {"machine": machine(), "parts": {}}
    print(f"# bench_reader: {machine_line(figures['machine'])}; runs under {out}")
    for name in ("hint", "budget"):
        if name not in args.only:
            continue
        sweep = out / name
        started = time.perf_counter()
        if not has_runs(sweep) or len([p for p in sweep.glob("*/metrics.json")]) < 2 * args.seeds:
            run_multirun(sweep, parts[name])
        rows, found = runs_table(sweep), effects(sweep)
        figures["parts"][name] = {"runs": rows, "effects": found, "seconds": time.perf_counter() - started}
        print_part(f"{name}: python -m vlmsweep -m {' '.join(parts[name])}", rows, found)
        if name == "hint":
            figures["parts"][name]["fields"] = fields = fields_table(sweep)
            print_fields(fields)
    if "loop" in args.only:
        figures["parts"]["loop"] = loop_part(out, args.engine)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
