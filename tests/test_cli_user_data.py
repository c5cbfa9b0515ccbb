"""A user's own data through the command line: train, evaluate, the loop, bad lines and bad images,
SROIE, and the package installed from its wheel - each run as `python -m ...` from a folder outside
the checkout, on manifests and images the test writes by hand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from userdata import FAST_CLI, REPO, SAMPLES, draw, line, run_dir, samples, vlmsweep, write_user_data

pytestmark = pytest.mark.slow
SROIE_SAMPLE = REPO.parent / "shared" / "data" / "sroie-sample"


@pytest.fixture
def user(tmp_path, offline_env):
    return tmp_path, write_user_data(tmp_path)


# Training, evaluating an adapter and the loop on the user's manifests are README commands: they run in
# tests/test_readme_commands.py, from the same kind of folder, with the same checks on ids and lineage.


def test_a_bad_manifest_fails_fast_naming_the_line_is_listed_by_check_and_costs_only_its_samples(user):
    cwd, m = user
    good = [line(*s) for s in SAMPLES[:2]]
    folder = m["all"].parent
    Image.new("RGB", (1, 3000), "white").save(folder / "images" / "sliver.png")
    draw(folder / "images" / "whole.jpg", ["a page"])
    data = (folder / "images" / "whole.jpg").read_bytes()
    (folder / "images" / "cut.jpg").write_bytes(data[: len(data) // 2])
    latin1 = line("rx-latin1", "images/rx_ko_001.png", "prescription_ko", {**SAMPLES[0][3], "prescriber": "José"})
    sliver = line("sliver", "images/sliver.png", "receipt", SAMPLES[2][3])
    cut = line("cut", "images/cut.jpg", "receipt", SAMPLES[2][3])
    bad = folder / "bad.jsonl"
    bad.write_bytes(("\n".join([good[0], latin1]) + "\n").encode("utf-8").replace("José".encode(), "José".encode("latin-1"))
                    + ("\n".join([sliver, cut, good[1]]) + "\n").encode("utf-8"))

    # strict: the run stops at the first problem, before any model is loaded
    strict = vlmsweep(["data.train_manifest=my_data/bad.jsonl", *FAST_CLI, "hydra.run.dir=runs/strict"], cwd, check=False)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr  # one line that names the file and line
    assert strict.stderr.lstrip().startswith("error: ") or "\nerror: " in strict.stderr
    assert "bad.jsonl:2: not UTF-8 (byte 0xe9 at byte offset" in strict.stderr
    info = json.loads((cwd / "runs" / "strict" / "run_info.json").read_text())
    assert info["status"] == "failed" and "bad.jsonl:2" in info["error"]
    assert "trainable parameters" not in strict.stdout + strict.stderr  # failed before the model was loaded

    # check lists every problem with file, line and reason
    checked = vlmsweep(["check", "my_data/bad.jsonl"], cwd, module="vlmsweep.data", check=False)
    assert checked.returncode == 1
    problems = [x for x in checked.stdout.splitlines() if x.startswith("my_data/bad.jsonl:")]
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4"]
    assert "not UTF-8" in problems[0]
    assert "aspect ratio 3000:1" in problems[1] and "sliver.png" in problems[1]
    assert "truncated or corrupt image" in problems[2] and "cut.jpg" in problems[2]
    skipping = vlmsweep(["check", "my_data/bad.jsonl", "--skip-bad-lines"], cwd, module="vlmsweep.data")
    assert "2 usable records" in skipping.stdout and "3 skipped" in skipping.stdout

    # skip mode trains on the two good lines; evaluation scores every readable line, unreadable images included
    # rx-ko-002's target written decomposed (NFD Hangul): normalised to NFC on load, and the report says so
    test_lines = [unicodedata.normalize("NFD", line(*SAMPLES[3])),
                  line("t-sliver", "images/sliver.png", "receipt", SAMPLES[2][3]),
                  line("t-cut", "images/cut.jpg", "receipt", SAMPLES[2][3])]
    (folder / "bad_test.jsonl").write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    skipped = vlmsweep(["data.skip_bad_lines=true", "data.train_manifest=my_data/bad.jsonl",
                        "data.test_manifest=my_data/bad_test.jsonl", *FAST_CLI, "hydra.run.dir=runs/skip"], cwd)
    out = run_dir(skipped)
    info = json.loads((out / "run_info.json").read_text())
    assert info["data"]["train"]["from_manifest"] == 2
    assert [n for n, _ in info["data"]["train"]["skipped"]] == [2, 3, 4]
    scored = {s["id"]: s for s in samples(out)}
    assert set(scored) == {"rx-ko-002", "t-sliver", "t-cut"}
    assert scored["t-sliver"]["tags"] == ["unreadable_input"] and "aspect ratio" in scored["t-sliver"]["input_error"]
    assert scored["t-cut"]["tags"] == ["unreadable_input"] and "cut.jpg" in scored["t-cut"]["input_error"]
    assert "unreadable_input" not in scored["rx-ko-002"]["tags"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tags.unreadable_input"] == 2.0
    assert metrics["contract.strict_parse_rate"] <= 1 / 3  # the two unreadable samples count as failures
    # the skipped lines and the normalised target are in metrics.json and report.md, not only in run_info.json
    assert metrics["data.skipped_lines"] == 3.0 and metrics["data.nfc_normalized"] == 1.0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Data" in report and "3 bad line(s) of" in report and "line 3: " in report
    assert "normalised to NFC" in report and scored["rx-ko-002"]["target"]["patient_name"] == "박지호"


def test_sroie_receipts_convert_and_evaluate_from_the_command_line(tmp_path, offline_env):
    root = tmp_path / "SROIE"
    for sub in ("img", "key"):
        (root / sub).mkdir(parents=True)
    if SROIE_SAMPLE.is_dir():  # three real receipts (the smallest, a mid-size and the 4961x7016 scan)
        for stem in ("000", "002", "600"):
            shutil.copy(SROIE_SAMPLE / "img" / f"{stem}.jpg", root / "img")
            shutil.copy(SROIE_SAMPLE / "key" / f"{stem}.json", root / "key")
    else:  # the real sample set is not shipped with the project: a receipt in SROIE's layout, typed by hand
        for stem, total in (("000", "9.00"), ("002", "12.50"), ("600", "3.20")):
            draw(root / "img" / f"{stem}.jpg", ["CORNER CAFE", "14/03/2025", f"TOTAL {total}"])
            (root / "key" / f"{stem}.json").write_text(json.dumps(
                {"company": "CORNER CAFE", "date": "14/03/2025", "address": "12 MAIN ST", "total": total}))
    converted = vlmsweep(["sroie", "--root", "SROIE", "--out", "data/sroie"], tmp_path, module="vlmsweep.data")
    assert "3 SROIE receipts" in converted.stdout
    evaluated = vlmsweep(["train.enabled=false", "data.test_manifest=data/sroie/manifest.jsonl", *FAST_CLI,
                          "hydra.run.dir=runs/sroie"], tmp_path)
    scored = samples(run_dir(evaluated))
    assert len(scored) == 3 and all(s["domain"] == "receipt" for s in scored)
    assert all(s["unannotated"] == ["items", "subtotal", "tax"] for s in scored)


def venv_seeing_these_packages(venv: Path) -> str:
    """A new virtual environment (its python) that imports the packages this interpreter has installed, whether
    this one is a virtual environment or a system Python: a .pth file lists this interpreter's site-packages folders.
    (`venv --system-site-packages` run from inside a virtual environment gives the *base* interpreter's packages.)
    Paths from a .pth line are not site folders, so their own .pth files - an editable install's finder among them -
    are not run: the new environment's own installs come first and only they."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    assert ours, sys.path
    (Path(purelib) / "vlmsweep_test_parent_packages.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    return python


def test_the_wheel_installs_and_runs_from_any_folder_with_a_users_config_folder(tmp_path, offline_env, monkeypatch):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(dist.glob("vlmsweep-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    # conf/ is installed as vlmsweep/conf, its sweep group included (pyproject.toml's package-dir)
    assert {"vlmsweep/conf/config.yaml", "vlmsweep/conf/model/tiny.yaml", "vlmsweep/conf/sweep/max_pixels.yaml"} <= set(names)
    # the default model's shipped weights, card and checksums (pyproject.toml's package-data; vlmsweep.model.shipped)
    assert {f"vlmsweep/model/shipped/{where}{n}" for where in ("", "reader/")  # the default model and the reader
            for n in ("tiny_warm.safetensors", "README.md", "warmup.json", "SHA256SUMS")} <= set(names)
    # a fresh virtual environment that reuses the installed dependencies, with the wheel (not -e) inside
    venv = tmp_path / "venv"
    python = venv_seeing_these_packages(venv)
    inst = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import vlmsweep; print(vlmsweep.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the wheel's copy, not the checkout's

    job = vlmsweep(["--cfg", "job"], elsewhere, python=python)
    assert "name: tiny" in job.stdout
    # the console scripts of pyproject.toml are installed, and are the same commands as the `python -m` spellings
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert {"vlmsweep", "vlmsweep-predict", "vlmsweep-export", "vlmsweep-memory"} <= set(scripts)
    assert all((venv / "bin" / name).is_file() for name in scripts), sorted(p.name for p in (venv / "bin").iterdir())
    script = subprocess.run([str(venv / "bin" / "vlmsweep"), "--cfg", "job"], cwd=elsewhere, capture_output=True,
                            text=True, timeout=300)
    assert script.returncode == 0 and script.stdout == job.stdout, script.stderr[-3000:]
    usage = subprocess.run([str(venv / "bin" / "vlmsweep-predict"), "--help"], cwd=elsewhere, capture_output=True,
                           text=True, timeout=300)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: python -m vlmsweep.predict"), usage.stderr[-3000:]
    # a shipped sweep composes from the installed package: its study and its search space (Hydra takes --cfg
    # without -m; the multirun itself is tests/test_sweeps.py's)
    sweep = vlmsweep(["+sweep=max_pixels", "--cfg", "all"], elsewhere, python=python)
    assert "name: max_pixels" in sweep.stdout and "256tok" in sweep.stdout.split("sweeper:", 1)[1], sweep.stdout
    # the user's own config folder adds an experiment without touching the package
    write_user_data(elsewhere)
    (elsewhere / "my_conf" / "experiment").mkdir(parents=True)
    (elsewhere / "my_conf" / "experiment" / "my_rx.yaml").write_text(
        "# @package _global_\n"
        "# python -m vlmsweep --config-dir my_conf +experiment=my_rx\n"
        "defaults:\n  - override /scope: all\n\n"
        "data:\n  train_manifest: my_data/train.jsonl\n  test_manifest: my_data/test.jsonl\n"
        "train:\n  max_steps: 1\n", encoding="utf-8")
    # ... on an empty cache: the default model is assembled from the wheel's own shipped files, with no warm-up
    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("VLMSWEEP_CACHE", str(empty))
    ran = vlmsweep(["--config-dir", "my_conf", "+experiment=my_rx", *FAST_CLI[1:], "hydra.run.dir=runs/mine"], elsewhere,
                   python=python)
    out = run_dir(ran)
    info = json.loads((out / "run_info.json").read_text())
    assert info["choices"]["scope"] == "all" and info["choices"]["experiment"] == "my_rx"
    assert {s["id"] for s in samples(out)} == {"rcpt-001", "rx-ko-002"}
    (assembled,) = (empty / "models").glob("tiny-warm-*")
    assert (assembled / "model.safetensors").is_file() and "warming" not in ran.stdout + ran.stderr
