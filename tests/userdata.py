"""A user's own labelled data, written the way a person would: images drawn and saved by hand (PNG and
JPEG in a subfolder), targets typed out, manifests written line by line - nothing from the project's
generators or cache. Used by the command-line tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parent.parent

KO = {
    "patient_name": "김민준", "patient_id": "900101-1******", "institution": "서울내과의원",
    "issue_date": "2025-03-14", "diagnosis_codes": ["J06.9"],
    "medications": [{"name": "Amoxicillin", "strength": "500 mg", "dose": 1, "frequency": 3, "days": 5}],
    "prescriber": "이서연",
}
ZH = {
    "patient_name": "王伟", "patient_id": "M0012345", "institution": "北京市第一医院",
    "issue_date": "2025年3月14日", "diagnosis_codes": ["J20.9"],
    "medications": [{"name": "阿莫西林", "strength": "250 mg", "dose": 2, "frequency": 3, "days": 7}],
    "prescriber": "张敏",
}
RECEIPT = {"store": "CORNER CAFE", "date": "14/03/2025", "address": "12 MAIN ST", "items": None,
           "subtotal": None, "tax": None, "total": "9.00"}
# id, image file, domain, target: two of each domain, half PNG, half JPEG
SAMPLES = [
    ("rx-ko-001", "images/rx_ko_001.png", "prescription_ko", KO),
    ("rx-zh-001", "images/rx_zh_001.jpg", "prescription_zh", ZH),
    ("rcpt-001", "images/rcpt_001.jpg", "receipt", RECEIPT),
    ("rx-ko-002", "images/rx_ko_002.jpg", "prescription_ko", {**KO, "patient_name": "박지호"}),
    ("rx-zh-002", "images/rx_zh_002.png", "prescription_zh", {**ZH, "patient_id": "M0054321"}),
    ("rcpt-002", "images/rcpt_002.png", "receipt", {**RECEIPT, "total": "12.50"}),
]


def draw(path: Path, lines: list[str], size=(420, 560)) -> None:
    """A scan-like page: a header bar and text lines placed by the text itself, so two pages differ as much as
    two real documents do (Pillow's default font draws Latin text only; the targets carry the CJK)."""
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=22)
    shift = sum(map(ord, "".join(lines))) % 7
    d.rectangle((0, 0, size[0], 30 + 12 * shift), fill=(40 + 25 * shift, 40, 90))
    for i, text in enumerate(lines):
        d.text((14 + 9 * ((i + shift) % 5), 50 + 12 * shift + 34 * i), text, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90) if path.suffix == ".jpg" else im.save(path)


def line(sid: str, image: str, domain: str, target: dict) -> str:
    return json.dumps({"id": sid, "image": image, "domain": domain, "target": target}, ensure_ascii=False)


def write_user_data(root: Path) -> dict[str, Path]:
    """root/my_data/{images/, all.jsonl, train.jsonl, test.jsonl, mining.jsonl, regression.jsonl}."""
    folder = root / "my_data"
    for sid, image, _, target in SAMPLES:
        draw(folder / image, [sid] + [f"{k}: {v}" for k, v in target.items() if isinstance(v, str) and v.isascii()])
    lines = [line(*s) for s in SAMPLES]
    parts = {"all": lines, "train": lines[0:2], "test": lines[2:4], "mining": lines[4:5], "regression": lines[5:6]}
    out = {}
    for name, chunk in parts.items():
        out[name] = folder / f"{name}.jsonl"
        out[name].write_text("\n".join(chunk) + "\n", encoding="utf-8")
    return out


# Few steps, short answers: a command-line run of the tiny model in well under a minute on 2 cores.
FAST_CLI = [
    "train.max_steps=2", "train.batch_size=2", "train.logging_steps=1", "eval.batch_size=4",
    "eval.max_new_tokens=16", "tracker=none", "max_pixels=256tok",
]


def user_env(python: str = sys.executable) -> dict[str, str]:
    """A user's environment: offline, unbuffered, and this checkout's code for this interpreter."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    if python == sys.executable:  # this checkout's code, wherever an editable install of the package points
        env["PYTHONPATH"] = str(REPO)
    return env


def start(args: list[str], cwd: Path, module: str = "vlmsweep") -> subprocess.Popen:
    """`python -m MODULE ARGS` started in the background (two commands at once), output in pipes."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=user_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def vlmsweep(args: list[str], cwd: Path, module: str = "vlmsweep", python: str = sys.executable,
             check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` exactly as a user types it, from `cwd` (a folder outside the checkout)."""
    proc = subprocess.run([python, "-m", module, *args], cwd=cwd, env=user_env(python), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {module} {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_dir(proc: subprocess.CompletedProcess) -> Path:
    """The run folder a `python -m vlmsweep` run printed ("vlmsweep: outputs in DIR ...")."""
    for text_line in proc.stdout.splitlines():
        if text_line.startswith("vlmsweep: outputs in "):
            return Path(text_line.split("outputs in ", 1)[1].split("  (", 1)[0])
    raise AssertionError(f"no 'vlmsweep: outputs in' line in:\n{proc.stdout[-2000:]}")


def samples(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
