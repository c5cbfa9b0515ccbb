"""adapters=per_domain: one LoRA adapter per domain group, each trained on its group's data, evaluated by routing.

The run's preamble is every run's (vlmsweep.pipeline.stages.prepare_run); the base model then routes the test pages
and gives the memory estimate, and each group is one vlmsweep.pipeline.stages.run_pass (the first starting from that
base): its training on the group's share, then the evaluation of the test pages routed to it. Every test sample goes
to one adapter: by its known domain (adapters.routing=known) or by the router's answer (model); the router
(vlmsweep/pipeline/routing.py) is asked about every test page either way, so its accuracy is measured in both modes.

<run>/adapters/<group>/   a normal adapter folder per group (predict and model.adapter take it alone)
<run>/adapters/routing.json  groups, their domains, the router's question (predict routes with it)
<run>/groups/<group>/     that group's training checkpoints and the evaluation of the samples routed to it (its run_pass's
                          metrics.json, samples.jsonl, report.md; metrics.json alone when none was routed to it)
<run>/metrics.json, samples.jsonl, report.md   every test sample, by_group.<group>.* and routing.*
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from vlmsweep.pipeline import routing
from vlmsweep.config import Config, pixel_budget
from vlmsweep.metrics import numeric
from vlmsweep.pipeline.run_folder import RunInfo
from vlmsweep.pipeline.stages import Pass, estimate_stage, load_stage, prepare_run, run_pass, write_stage

log = logging.getLogger(__name__)

GROUP_PREFIX = "by_group."


class _GroupSink:
    """The tracker, with one group's training curve under its own names and after the previous groups' steps."""

    def __init__(self, tracker, group: str, offset: int):
        self.tracker, self.group, self.offset = tracker, group, offset

    def log(self, values: dict, step: int | None = None) -> None:
        self.tracker.log({k.replace("train/", f"train/{self.group}/", 1): v for k, v in values.items()},
                         None if step is None else self.offset + step)


def adapters_folder(cfg: Config, out_dir: Path) -> Path:
    """Where the groups' adapters are: trained into this run's adapters/, or the folder model.adapter names."""
    if cfg.train.enabled:
        return out_dir / "adapters"
    folder = Path(cfg.model.adapter).expanduser()
    if (folder / "adapters" / routing.ROUTING_FILE).is_file():
        folder = folder / "adapters"  # a per-domain run folder given: its adapters/
    if routing.read_routing(folder) is None:
        raise FileNotFoundError(
            f"model.adapter={cfg.model.adapter}: no {routing.ROUTING_FILE} there; with adapters=per_domain give a "
            "per-domain run's adapters/ folder (an adapter folder of one group evaluates with adapters=single)"
        )
    return folder


def route_test_set(cfg: Config, groups: dict[str, list[str]], base, processor, records) -> tuple[list[str], list[routing.Route | None], float]:
    """(known group, router's Route or None for an unreadable page) per test record, and router seconds per page."""
    from vlmsweep.data.images import ImageLoadError, check_size, load_image

    known = [routing.group_of(r.domain, groups, f"test record {r.id!r}") for r in records]
    min_pixels, max_pixels = pixel_budget(cfg)
    routes: list[routing.Route | None] = []
    started = time.perf_counter()
    base.eval()
    for r in records:
        try:
            image = load_image(Path(r.image), max_pixels=4 * max_pixels)
            check_size(image, Path(r.image))
        except ImageLoadError:
            routes.append(None)  # evaluation scores it as unreadable_input; the known group takes it
            continue
        routes += routing.route_images(base, processor, [image], list(groups), min_pixels=min_pixels, max_pixels=max_pixels)
    return known, routes, (time.perf_counter() - started) / max(1, len(records))


def run_per_domain(cfg: Config, out_dir: Path, tracker, info: RunInfo) -> dict[str, float]:
    """The run's preamble (prepare_run), the router over the test pages, one run_pass per group (its training, and the
    evaluation of the pages routed to it), then every test sample together in out_dir's files."""
    from vlmsweep.evaluate.metrics import aggregate
    from vlmsweep.files import write_json

    splits = prepare_run(cfg, info).splits  # a bad manifest or a leak fails here, before the model is loaded
    groups = dict(cfg.adapters.groups)
    adapters = adapters_folder(cfg, out_dir)
    if not cfg.train.enabled:
        groups = routing.read_routing(adapters)["groups"]
        if groups != {g: list(d) for g, d in cfg.adapters.groups.items()}:
            log.warning("evaluating %s with its own grouping %s (adapters.groups is %s)", adapters, groups,
                        dict(cfg.adapters.groups))
    train_by_group = routing.split_by_group(splits["train"], groups, "training") if cfg.train.enabled else {}
    base, processor = load_stage(cfg, check_schemas=cfg.eval.enabled)  # a schema that cannot compile fails now
    metrics: dict[str, float] = estimate_stage(cfg, base, processor, splits["train"]) if cfg.train.enabled else {}
    test = splits["test"] if cfg.eval.enabled else []
    known, routes, route_seconds = route_test_set(cfg, groups, base, processor, test) if test else ([], [], 0.0)
    chosen = [k if (cfg.adapters.routing == "known" or r is None) else r.group for k, r in zip(known, routes)]
    # The first group's pass starts from this base; LoRA is injected into a base in place, so each later one loads its own.
    loaded: tuple | None = (base, processor)
    del base, processor

    samples_by_id: dict[str, dict] = {}
    train_metrics: dict[str, dict[str, float]] = {}
    skipped: dict[str, list] = {}
    steps_before = 0
    for group in groups:
        work = out_dir / "groups" / group
        routed = [r for r, g in zip(test, chosen) if g == group]
        if cfg.train.enabled:
            log.info("adapters=per_domain: training the %s adapter on %d samples (%s)", group,
                     len(train_by_group[group]), ", ".join(groups[group]))
        elif not routed:
            continue  # nothing to train or evaluate with this group's adapter

        def trained(metrics: dict[str, float], group: str = group) -> None:
            train_metrics[group] = metrics

        result = run_pass(cfg, Pass(
            out_dir=work,
            train=train_by_group[group] if cfg.train.enabled else [],
            evals={group: (routed, work)} if routed else {},
            tracker=_GroupSink(tracker, group, steps_before),
            main_set=group,
            adapter=None if cfg.train.enabled else str(adapters / group),
            estimate=False,  # estimated once above, for the whole training set
            samples_table=None,  # the run's table holds every group's samples
            on_trained=trained,
            base=loaded,
        ), info)
        loaded = None
        if cfg.train.enabled:
            steps_before += cfg.train.max_steps
            skipped[group] = info.data.get("skipped", [])  # train_stage records one group's skips at a time
            adapters.mkdir(parents=True, exist_ok=True)
            if (adapters / group).exists():
                shutil.rmtree(adapters / group)
            shutil.move(str(work / "adapter"), str(adapters / group))
        if routed:
            samples_by_id |= {s["id"]: s | {"adapter": group} for s in result.sets[group][1]}
    if cfg.train.enabled:
        routing.write_routing(adapters, groups)
        info.update(skipped=skipped)  # group -> the samples train.on_truncation=skip left out
    if not cfg.eval.enabled:
        metrics |= combine_train_metrics(train_metrics)
        write_json(out_dir / "metrics.json", metrics)
        return metrics

    samples = []
    for rec, k, route in zip(test, known, routes):
        s = samples_by_id[rec.id]
        s["route"] = {"known": k, "model": route.group if route else None, "scores": route.scores if route else None,
                      "by": cfg.adapters.routing if route else "known (unreadable page)"}
        samples.append(s)
    metrics |= aggregate(samples)
    metrics |= group_metrics(samples, groups)
    metrics |= combine_train_metrics(train_metrics)
    metrics["cost.routing_seconds_per_sample"] = route_seconds
    table = group_table(metrics, groups, cfg.adapters.routing, {g: len(r) for g, r in train_by_group.items()})
    metrics = write_stage(cfg, out_dir, numeric(metrics), samples, appendix=table)  # each file written once
    if cfg.tracker.log_samples:
        tracker.table("samples", samples)
    info.update(cost={k: v for k, v in metrics.items() if k.startswith(("cost.", "memory."))},
                adapters={"folder": str(adapters), "groups": groups, "routing": cfg.adapters.routing})
    return metrics


def group_metrics(samples: list[dict], groups: dict[str, list[str]]) -> dict[str, float]:
    """by_group.<group>.<metric> over the samples whose own domain is in the group, and the router's accuracy
    (its group = the group of the domain asked) overall and per group."""
    from vlmsweep.evaluate.metrics import aggregate

    out: dict[str, float] = {}
    routed = [s for s in samples if s["route"]["model"] is not None]
    if routed:
        out["routing.accuracy"] = sum(s["route"]["model"] == s["route"]["known"] for s in routed) / len(routed)
    out["routing.samples"] = float(len(routed))
    for group in groups:
        mine = [s for s in samples if s["route"]["known"] == group]
        if not mine:
            continue
        out |= {f"{GROUP_PREFIX}{group}.{k}": v for k, v in aggregate(mine).items() if not k.startswith("by_domain.")}
        judged = [s for s in mine if s["route"]["model"] is not None]
        if judged:
            out[f"{GROUP_PREFIX}{group}.routing.accuracy"] = sum(s["route"]["model"] == group for s in judged) / len(judged)
    return out


def combine_train_metrics(per_group: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each group's training metrics as by_group.<group>.<metric>; overall: trainable parameters summed (two
    adapters hold twice the weights), the peak memory the largest, the rest averaged over the groups."""
    if not per_group:
        return {}
    out: dict[str, float] = {}
    for group, m in per_group.items():
        out |= {f"{GROUP_PREFIX}{group}.{k}": v for k, v in m.items()}
    for key in {k for m in per_group.values() for k in m}:
        values = [m[key] for m in per_group.values() if key in m]
        if key.startswith("train.trainable_params.") or key == "train.skipped_too_long":
            out[key] = float(sum(values))
        elif key == "cost.train_peak_memory_mb":
            out[key] = float(max(values))
        else:
            out[key] = float(sum(values) / len(values))
    return out


def group_table(metrics: dict[str, float], groups: dict[str, list[str]], how: str, train_sizes: dict[str, int]) -> str:
    keys = ("routing.accuracy", "contract.strict_parse_rate", "contract.key_set_rate", "content.e2e_field_em",
            "content.anls", "rate.leakage", "train.loss")
    lines = ["## Per-domain adapters", "",
             f"Each group's adapter was trained on that group's samples only; test samples went to an adapter by "
             f"{'their known domain' if how == 'known' else 'the router'} (adapters.routing={how}). The router (the base "
             "model choosing among the group names, vlmsweep/pipeline/routing.py) was asked about every page; routing.accuracy "
             f"is how often it chose the page's own group: {_cell(metrics.get('routing.accuracy'))} overall.", "",
             "| group | domains | train samples | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for g, domains in groups.items():
        cells = [_cell(metrics.get(f"{GROUP_PREFIX}{g}.{k}")) for k in keys]
        lines.append(f"| {g} | {', '.join(domains)} | {train_sizes.get(g, '–')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
