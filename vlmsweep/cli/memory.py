"""`python -m vlmsweep.memory`: the peak-memory estimate of the four experiments, or of one config."""

from __future__ import annotations

from vlmsweep.cli.checks import check_command_line
from vlmsweep.config import Config
from vlmsweep.config.compose import compose
from vlmsweep.model.memory import EXPERIMENTS, SUPERVISED_TOKENS, TEXT_TOKENS, GiB, estimate_from_config, family


def main(argv: list[str] | None = None) -> int:
    """`python -m vlmsweep.memory [OVERRIDES]`: the estimate for the config `python -m vlmsweep OVERRIDES` trains."""
    import sys

    from vlmsweep.model.shapes import model_config_of

    overrides = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(overrides):
        print("usage: python -m vlmsweep.memory [OVERRIDES ...]\n\n"
              "The estimated peak accelerator memory of one training step of the config that\n"
              "`python -m vlmsweep OVERRIDES` trains (no weights are loaded), with the other train.loss_impl beside it.\n\n"
              "examples:\n  python -m vlmsweep.memory +experiment=exp2 max_pixels=1024tok\n"
              "  python -m vlmsweep.memory model=qwen2_5_vl_3b train.batch_size=1")
        return 0
    try:
        cfg = compose_config(overrides)
        model_config_hf = model_config_of(cfg.model)
        est = estimate_from_config(cfg, model_config_hf, text_tokens=TEXT_TOKENS, supervised_tokens=SUPERVISED_TOKENS)
    except Exception as err:  # noqa: BLE001 - one line that names the option, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    s = est.settings
    title = (f"model={cfg.choices.get('model', cfg.model.name)} ({family(model_config_hf)}), quant={s['quant']}, "
             f"scope={cfg.scope.name}, LoRA r={s['lora_r']}, batch {s['batch_size']}, "
             f"{s['visual_tokens']} visual + {s['text_tokens']} text tokens ({s['supervised_tokens']} supervised), "
             f"gradient checkpointing {'on' if s['grad_checkpointing'] else 'off'}")
    print(est.table(title))
    other = "chunked" if s["loss_impl"] == "eager" else "eager"
    alt = estimate_from_config(cfg, model_config_hf, text_tokens=TEXT_TOKENS, supervised_tokens=SUPERVISED_TOKENS,
                               loss_impl=other)
    print(f"train.loss_impl={other} instead: logits {alt.logits_bytes / GiB:.3f} GiB, total {alt.total_bytes / GiB:.3f} GiB")
    plan = EXPERIMENTS.get(cfg.choices.get("experiment", ""))
    if plan:
        print(f"the plan's estimate for {cfg.choices['experiment']}: ~{plan[2]} GB")
    print(f"Assumed per sample: {TEXT_TOKENS} text tokens, {SUPERVISED_TOKENS} of them answer (a run measures its "
          "own from the data). Not counted: CUDA context, allocator fragmentation, evaluation-time KV cache.")
    return 0


def compose_config(overrides: list[str]) -> Config:
    """The typed Config of `python -m vlmsweep OVERRIDES`, composed without starting a run."""
    if any(o in ("-m", "--multirun") for o in overrides):
        raise ValueError("python -m vlmsweep.memory estimates one config: drop -m and give one value per option")
    problem, _ = check_command_line(overrides)
    if problem:
        raise ValueError(problem)
    return compose(overrides)  # nothing is written
