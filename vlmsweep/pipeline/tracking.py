"""The tracker: Weights & Biases, offline unless configured otherwise, and never fatal to a run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vlmsweep.config import Config

log = logging.getLogger(__name__)


class Tracker:
    """Every call swallows and logs tracker errors: an unreachable W&B never kills training."""

    def __init__(self, run: Any = None):
        self.run = run

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

    def log(self, values: dict[str, float], step: int | None = None) -> None:
        self._call("log", lambda: self.run.log(values, step=step))

    def summary(self, values: dict[str, Any]) -> None:
        def write():
            for k, v in values.items():
                self.run.summary[k] = v

        self._call("summary", write)

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return

        def write():
            import wandb

            columns = list(rows[0])
            data = [[_cell(r.get(c)) for c in columns] for r in rows]
            self.run.log({name: wandb.Table(columns=columns, data=data)})

        self._call("table", write)

    def image(self, name: str, path: Path) -> None:
        def write():
            import wandb

            self.run.log({name: wandb.Image(str(path))})

        self._call("image", write)

    def finish(self, exit_code: int = 0) -> None:
        self._call("finish", lambda: self.run.finish(exit_code=exit_code))
        self.run = None


def _cell(value: Any) -> Any:
    import json

    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def run_tags(cfg: Config) -> list[str]:
    """Option labels as tags: nf4, llm, 256, ... (the names on plots and in W&B filters)."""
    return [f"{group}={option}" for group, option in sorted(cfg.choices.items()) if option]


def start(cfg: Config, out_dir: Path, name: str, group: str | None, config_dict: dict) -> Tracker:
    t = cfg.tracker
    if t.backend == "none" or t.mode == "disabled":
        return Tracker()
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=t.project,
            entity=t.entity,
            group=t.group or group,
            name=name,
            tags=run_tags(cfg)[:64],
            config=config_dict,
            dir=str(out_dir),
            mode=t.mode,
            reinit="finish_previous",  # multirun jobs share one process
        )
        return Tracker(run)
    except Exception as err:  # noqa: BLE001
        log.warning("tracker: W&B could not start (%s); the run goes on without it", err)
        return Tracker()
