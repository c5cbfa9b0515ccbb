"""The tracker: Weights & Biases, offline unless configured otherwise, and never fatal to a run.

What a synced experiment looks like in W&B (docs/wandb.md): each run named by the axes its multirun or sweep
varies plus its seed, grouped by the experiment's folder (with its date) or tracker.group, tagged with every
choice; a per-sample table with the page beside the prediction; the adapter and the test set as artifacts."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from vlmsweep.config import Config
from vlmsweep.pipeline.run_folder import optuna_trial

log = logging.getLogger(__name__)

# Steps a caller passes (the trainer's global step, offset per cycle or per group) become this metric's value
# instead of W&B's own step: W&B drops a row whose step is below one it has seen, and the loop's tables and cycle
# rows used to advance it past the next cycle's steps ("Tried to log to step 30 that is less than the current
# step 31 ... this data will be ignored", issue #40).
STEP = "train/global_step"
CYCLE = "loop/cycle"  # the x-axis of every loop/* metric (vlmsweep.loop.cycle_log writes it in each row)
THUMBNAIL_SIDE = 384  # pixels on the long side of a page in the samples table: enough to read a field


class Tracker:
    """Every call swallows and logs tracker errors: an unreachable W&B never kills training."""

    def __init__(self, run: Any = None, cfg: Config | None = None, out_dir: Path | None = None):
        self.run, self.cfg, self.out_dir = run, cfg, out_dir
        self._defined: set[str] = set()
        self._images: dict[str, Path] | None = None

    @property
    def active(self) -> bool:
        return self.run is not None

    def _call(self, what: str, fn) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - the tracker is best-effort by design
            log.warning("tracker: %s failed (%s); the run goes on", what, err)

    def _define(self, keys, step_metric: str | None) -> None:
        """Each metric once: its x-axis and, where the metric registry knows its direction, its best value as
        the run's summary (max or min), so a W&B run table sorts by what is better."""
        for key in keys:
            if key in self._defined or key in (STEP, CYCLE):
                continue
            self._defined.add(key)
            best = _best(key)
            self.run.define_metric(key, step_metric=step_metric, **({"summary": best} if best else {}))

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        def write():
            if CYCLE in values:  # a loop row: its cycle is its step
                self._define(values, CYCLE)
                self.run.log(dict(values))
            elif step is not None:
                self._define(values, STEP)
                self.run.log({**values, STEP: step})
            else:
                self.run.log(dict(values))

        self._call("log", write)

    def summary(self, values: dict[str, Any]) -> None:
        def write():
            for k, v in values.items():
                self.run.summary[k] = v

        self._call("summary", write)

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """A table under `name`, logged without advancing W&B's step (commit=False: it joins the next row).
        Evaluated samples (id, scores, tags) get the samples layout, the same columns in every run."""
        if not rows:
            return

        def write():
            import wandb

            if all("id" in r and "scores" in r for r in rows):
                columns, data = self._samples_table(rows)
            else:
                columns = list(rows[0])
                data = [[_cell(r.get(c)) for c in columns] for r in rows]
            self.run.log({name: wandb.Table(columns=columns, data=data)}, commit=False)

        self._call("table", write)

    def _samples_table(self, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        """One row per page, ordered by id (W&B's table comparison joins runs on it): the page, the prediction
        (raw: the answer as generated) and the target side by side, the page's OCR text the prompt held (ocr_hint;
        empty without one), every per-sample score as a number, one boolean column per failure tag (tag/<name>, every
        tag in every run)."""
        from vlmsweep.evaluate.tags import TAGS

        scores = sorted({k for r in rows for k in r["scores"]})
        columns = ["id", "domain", "page", "raw", "target", "ocr_hint", *scores, *(f"tag/{t}" for t in TAGS)]
        data = []
        for r in sorted(rows, key=lambda r: str(r["id"])):
            tags = set(r.get("tags") or ())
            data.append([str(r["id"]), r.get("domain"), self._page(str(r["id"])), r.get("raw"),
                         json.dumps(r.get("target"), ensure_ascii=False), r.get("ocr_hint") or "",
                         *(_number(r["scores"].get(s)) for s in scores), *(t in tags for t in TAGS)])
        return columns, data

    def _page(self, sample_id: str):
        """The page of a sample as a thumbnail (wandb.Image), found by id in the run's evaluated splits;
        None where the run's config or the image is not at hand."""
        import wandb
        from PIL import Image

        if self._images is None:
            self._images = _image_paths(self.cfg) if self.cfg is not None else {}
        path = self._images.get(sample_id)
        if path is None or not Path(path).is_file():
            return None
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            return wandb.Image(im, caption=sample_id)

    def image(self, name: str, path: Path) -> None:
        def write():
            import wandb

            self.run.log({name: wandb.Image(str(path))}, commit=False)

        self._call("image", write)

    def artifact(self, name: str, kind: str, paths: list[Path], metadata: dict[str, Any] | None = None,
                 use: bool = False) -> None:
        """Files or folders as a W&B artifact: logged as this run's output, or used as its input (`use`; offline
        W&B cannot use an artifact, so it is logged: the same files give the same version in every run)."""
        def write():
            import wandb

            art = wandb.Artifact(name, type=kind, metadata=metadata or {})
            for path in paths:
                art.add_dir(str(path)) if Path(path).is_dir() else art.add_file(str(path))
            if use and not self.run.offline:
                self.run.use_artifact(art)
            else:
                self.run.log_artifact(art)

        self._call("artifact", write)

    def finish(self, exit_code: int = 0) -> None:
        if exit_code == 0 and self.run is not None and self.cfg is not None and self.out_dir is not None:
            self._call("artifacts", self._log_run_artifacts)
        self._call("finish", lambda: self.run.finish(exit_code=exit_code))
        self.run = None

    def _log_run_artifacts(self) -> None:
        """The test set the run was scored on (dataset) and its adapter (model, with the run's choices and
        headline metrics): the report refuses runs on different test sets, and W&B's lineage shows the same."""
        cfg, out_dir = self.cfg, Path(self.out_dir)
        if cfg.eval.enabled or cfg.loop.cycles > 0:
            name, paths, meta = test_set_artifact(cfg, out_dir)
            self.artifact(name, "dataset", paths, meta, use=True)
        # the last loop cycle's adapter, else the run's (adapters/<group>/ for adapters=per_domain)
        cycles = sorted(out_dir.glob("cycle_*/adapter"), key=lambda p: int(p.parent.name.split("_")[1]))
        adapter = next((a for a in [*cycles[-1:], out_dir / "adapter", out_dir / "adapters"]
                        if (a / "adapter_config.json").is_file() or any(a.glob("*/adapter_config.json"))), None)
        if adapter is not None:
            from vlmsweep.metrics import numeric

            meta = {"choices": dict(cfg.choices), "seed": cfg.seed, "metrics": numeric(dict(self.run.summary))}
            self.artifact(_artifact_name(f"adapter-{self.run.name}"), "model", [adapter], meta)


def _best(key: str) -> str | None:
    """'max' or 'min' from vlmsweep.metrics for a logged key (train/loss, loop/test/<metric>, <metric>)."""
    from vlmsweep.metrics import higher_is_better

    parts = key.split("/")
    if parts[0] == "train":
        name = f"train.{parts[-1]}"
    elif parts[0] == "loop" and len(parts) >= 3:
        name = "/".join(parts[2:])
    else:
        name = key
    try:
        return "max" if higher_is_better(name) else "min"
    except KeyError:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _image_paths(cfg: Config) -> dict[str, Path]:
    """id -> image path of the splits a run evaluates (read from the data cache, or the user's manifests)."""
    from vlmsweep.data.splits import load_splits

    names = ("test", "regression", "mining") if cfg.loop.cycles > 0 else ("test",)
    splits = load_splits(cfg.data, cfg.data_mix, Path(cfg.cache_dir).expanduser() / "data", names)
    return {r.id: Path(r.image) for n in names for r in splits[n]}


def _artifact_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:128]


def test_set_artifact(cfg: Config, out_dir: Path) -> tuple[str, list[Path], dict[str, Any]]:
    """(name, files, metadata) of the run's test set: the user's manifest, or a description of the synthetic split
    (data seed, size, mix, noise) whose hash names it, so runs on the same test set share one artifact."""
    if cfg.data.test_manifest:
        manifest = Path(cfg.data.test_manifest).expanduser()
        return _artifact_name(f"test-{manifest.stem}"), [manifest], {"manifest": str(manifest)}
    from dataclasses import asdict

    described = {"data_seed": cfg.data.seed, "test_size": cfg.data.test_size, "noise": cfg.data.noise,
                 "data_mix": asdict(cfg.data_mix)}
    text = json.dumps(described, sort_keys=True)
    path = out_dir / "wandb" / "test_set.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return f"test-synthetic-{hashlib.sha1(text.encode()).hexdigest()[:10]}", [path], described


def run_tags(cfg: Config) -> list[str]:
    """Option labels as tags: nf4, llm, 256, ... (the names on plots and in W&B filters)."""
    return [f"{group}={option}" for group, option in sorted(cfg.choices.items()) if option]


def _date_folder(folder: Path) -> str:
    """A Hydra folder with its date: outputs/multirun/2026-12-07/12-00-00 -> "2026-12-07/12-00-00" (the time of
    day alone repeats every day); a folder the user named keeps its name."""
    return f"{folder.parent.name}/{folder.name}" if re.fullmatch(r"\d{4}-\d{2}-\d{2}", folder.parent.name) else folder.name


def experiment_group(folder: Path, group: str | None = None) -> str:
    """The W&B group of an experiment: tracker.group, else its multirun/sweep folder (or a single run's) with its date.
    The report run (python -m vlmsweep.report --wandb) joins the same group."""
    return group or _date_folder(Path(folder).resolve())


def _swept_keys(hc) -> set[str]:
    """The keys a multirun or sweep varies: overrides with several values in the launch (multirun.yaml's
    hydra.overrides.task) and an Optuna sweeper's parameters."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    keys = set((OmegaConf.select(hc, "sweeper.params") or {}).keys())
    launch = Path(hc.sweep.dir) / "multirun.yaml"
    if launch.is_file():
        task = OmegaConf.select(OmegaConf.load(launch), "hydra.overrides.task") or []
        keys |= {o.get_key_element().lstrip("+~") for o in OverridesParser.create().parse_overrides(list(task))
                 if o.is_sweep_override()}
    return keys


def identity(cfg: Config, name: str, group: str | None) -> dict[str, Any]:
    """wandb.init's name, group, job_type and tags for this run, and (multirun, sweep) its job's values for its config.
    Under Hydra the name is the swept keys' values and the seed ("quant=nf4 seed=1"); a single run's is the
    choices typed on its command line and the seed. Outside Hydra (tests, python callers) `name` and `group`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    t = cfg.tracker
    job_type = "loop" if cfg.loop.cycles > 0 else "train" if cfg.train.enabled else "eval"
    tags = run_tags(cfg) + [f"seed={cfg.seed}"] + list(t.tags)
    out: dict[str, Any] = {"name": name, "group": t.group or group, "job_type": job_type, "trial": {}}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        task = dict(o.split("=", 1) for o in hc.overrides.task if "=" in o)
        task = {k.lstrip("+~"): v for k, v in task.items()}
        if hc.mode == RunMode.MULTIRUN:
            swept = _swept_keys(hc)
            named = {k: v for k, v in task.items() if k in swept and k != "seed"}
            out["group"] = experiment_group(Path(hc.sweep.dir), t.group)
            # The Hydra job number, and in an Optuna sweep the study's trial number (the sweeper passes it in the
            # job's environment: with several workers the two differ); the sweep's name is the `sweep` choice's tag.
            out["trial"] = {"job": int(hc.job.num), "params": named}
            tags.append(f"job={hc.job.num}")
            if (number := optuna_trial()) is not None:
                out["trial"]["number"] = number
                tags.append(f"trial={number}")
        else:
            named = {k: v for k, v in task.items() if k in cfg.choices and k != "tracker"}  # where it logs, not what it tests
            out["group"] = experiment_group(Path(hc.runtime.output_dir), t.group)
        out["name"] = " ".join([f"{k}={v}" for k, v in named.items()] + [f"seed={cfg.seed}"])
    out["tags"] = list(dict.fromkeys(tag[:64] for tag in tags))  # W&B refuses a tag over 64 characters
    return out


def start(cfg: Config, out_dir: Path, name: str, group: str | None, config_dict: dict) -> Tracker:
    t = cfg.tracker
    if t.backend == "none" or t.mode == "disabled":
        return Tracker()
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        who = identity(cfg, name, group)
        run = wandb.init(
            project=t.project,
            entity=t.entity,
            group=who["group"],
            name=who["name"],
            job_type=who["job_type"],
            tags=who["tags"],
            config={**config_dict, **({"trial": who["trial"]} if who["trial"] else {})},
            dir=str(out_dir),
            mode=t.mode,
            reinit="finish_previous",  # multirun jobs share one process (wandb>=0.19.10)
        )
        run.define_metric(STEP)
        run.define_metric(CYCLE)
        return Tracker(run, cfg, out_dir)
    except Exception as err:  # noqa: BLE001
        log.warning("tracker: W&B could not start (%s); the run goes on without it", err)
        return Tracker()
