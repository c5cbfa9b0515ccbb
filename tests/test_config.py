"""Every option of every group composes; experiment presets compose; configs are airtight."""

from __future__ import annotations

import dataclasses
import re
import shutil
import typing
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from conftest import CONF_DIR, SWEEPS_DIR, compose
from vlmsweep import config as C

GROUPS = ["model", "quant", "scope", "max_pixels", "data_mix", "domain_tag", "loss", "decoding", "tracker"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    # a checkpoint option needs a path; the OCR baseline's path names its engine (tesseract, set by the option)
    checkpoint = group == "model" and option != "ocr_tesseract"
    cfg = compose([f"{group}={option}", "model.path=/models/x"] if checkpoint else [f"{group}={option}"])
    section = getattr(cfg, group)
    assert section.name == option  # the option label is the name on plots and tags
    assert cfg.choices[group] == option


@pytest.mark.parametrize("exp,quant,scope", [("exp1", "nf4", "llm"), ("exp2", "nf4", "all"), ("exp3", "bf16", "llm"), ("exp4", "bf16", "all")])
def test_experiment_presets_compose_and_command_line_model_wins(exp, quant, scope):
    preset = compose([f"+experiment={exp}"])
    assert (preset.quant.name, preset.scope.name) == (quant, scope)
    assert preset.model.source == "pretrained"
    assert preset.model.prequantized == (quant == "nf4")  # exp1/2 start from the bnb-4bit checkpoint
    on_cpu = compose([f"+experiment={exp}", "model=tiny"])
    assert on_cpu.model.name == "tiny" and on_cpu.quant.name == quant and on_cpu.scope.name == scope


def test_scope_parts_and_quant_values():
    assert compose(["scope=all"]).scope.parts == ["llm", "merger", "vision"]
    assert compose(["scope=projector"]).scope.parts == ["merger"]
    assert compose(["scope=vision_last_n", "scope.vision_last_n=2"]).scope.vision_last_n == 2
    nf4 = compose(["quant=nf4"]).quant
    assert nf4.load_in_4bit and nf4.double_quant and nf4.quant_type == "nf4" and not nf4.quantize_vision
    assert compose(["max_pixels=1024tok"]).max_pixels.visual_tokens == 1024
    assert C.visual_tokens_to_pixels(1024) == 1024 * 28 * 28


def test_free_visual_token_number():
    cfg = compose(["max_pixels.visual_tokens=300"])
    assert cfg.max_pixels.visual_tokens == 300 and cfg.choices["max_pixels"] == "256tok"


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException, match="Available options") as err:
        compose(["quant=int3"])
    assert "nf4" in str(err.value.__cause__ or err.value) or "nf4" in str(err.value)


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        compose(["train.learning_rate=1e-3"])  # typo of train.lr
    with pytest.raises(Exception, match="learning_rate"):
        compose(["+train.learning_rate=1e-3"])


def test_a_yaml_key_nothing_reads_fails(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    path = conf / "quant" / "bf16.yaml"
    path.write_text(path.read_text() + "bnb_stuff: 3\n")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    C.register_configs()
    with pytest.raises(Exception, match="bnb_stuff"):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            hydra_compose("config", overrides=["quant=bf16"])


def test_every_config_field_is_read_by_the_code():
    """Airtight: a field that no module reads is a knob that silently does nothing."""
    config_package = Path(C.__file__).parent  # the schema and its checks: reading a field there is no use of it
    source = "\n".join(p.read_text() for p in config_package.parent.rglob("*.py") if config_package not in p.parents)
    # Hydra reads some keys itself through interpolation, e.g. ${sweep.trials} in conf/sweep/*.yaml
    source += "\n".join(p.read_text() for p in [*CONF_DIR.rglob("*.yaml"), *SWEEPS_DIR.glob("*.yaml")])
    unread = []
    for cls in (C.ModelConfig, C.QuantConfig, C.ScopeConfig, C.LoraConfig, C.MaxPixelsConfig, C.DataMixConfig,
                C.DomainTagConfig, C.LossConfig, C.DecodingConfig, C.TrackerConfig, C.DataConfig, C.TrainConfig,
                C.EvalConfig, C.LoopConfig, C.SweepConfig):
        for f in dataclasses.fields(cls):
            if f.name != "name" and not re.search(rf"\.{f.name}\b", source):  # attribute or ${group.key}
                unread.append(f"{cls.__name__}.{f.name}")
    assert unread == []


def test_the_ocr_baseline_refuses_training_and_other_engines():
    assert compose(["model=ocr_tesseract"]).train.enabled is False  # its recipe: it only evaluates
    with pytest.raises(ValueError, match="train.enabled=false"):
        compose(["model=ocr_tesseract", "train.enabled=true"])
    with pytest.raises(ValueError, match="engine is tesseract"):
        compose(["model=ocr_tesseract", "model.path=easyocr"])


def test_cross_field_checks_name_the_option():
    with pytest.raises(ValueError, match="model.path"):
        compose(["model=qwen2_vl_2b", "model.path=null"])
    with pytest.raises(ValueError, match="receipt_ratio"):
        compose(["data_mix.receipt_ratio=1.5"])


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", r"train.lr=-1.0: expected a positive learning rate \(> 0\)"),
    ("train.lr=0", r"train.lr=0.0: expected a positive"),
    ("train.batch_size=0", r"train.batch_size=0: expected samples per device"),
    ("train.max_steps=0", r"train.max_steps=0: expected optimizer steps"),
    ("eval.max_new_tokens=0", r"eval.max_new_tokens=0"),
    ("lora.r=0", r"lora.r=0: expected the adapters' rank"),
    ("lora.dropout=1.0", r"lora.dropout=1.0: expected a value in \[0, 1\)"),
    ("train.warmup_ratio=-0.1", r"train.warmup_ratio=-0.1"),
    ("loop.noise_seeds=-1", r"loop.noise_seeds=-1"),
    ("train.lr_scheduler=cosin", r"train.lr_scheduler='cosin': expected one of transformers' schedulers: .*cosine"),
    ("scope.vision_last_n=2", r"scope.vision_last_n=2 applies to the vision part.*scope=vision_last_n"),
])
def test_numbers_out_of_range_and_ignored_options_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        compose([override])


def test_every_error_is_reported_at_once_and_in_range_values_pass():
    with pytest.raises(ValueError) as err:
        compose(["train.lr=-1", "train.batch_size=0"])
    assert "train.lr=-1.0" in str(err.value) and "train.batch_size=0" in str(err.value)
    c = compose(["scope=vision_last_n", "scope.vision_last_n=1", "train.warmup_ratio=0.1", "lora.dropout=0"])
    assert c.scope.vision_last_n == 1 and "vision" in c.scope.parts


def plain_values(config_yaml: Path) -> dict[str, object]:
    """Dotted keys of conf/config.yaml that hold a plain value (no interpolation), outside the defaults list and
    Hydra's settings: each one would be a second copy of a schema default (vlmsweep/config/schema.py)."""
    import yaml

    def walk(node, prefix: str):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        elif not (isinstance(node, str) and "${" in node):
            yield prefix[:-1], node

    tree = yaml.safe_load(config_yaml.read_text())
    return dict(kv for k, v in tree.items() if k not in ("defaults", "hydra") for kv in walk(v, f"{k}."))


def test_every_default_is_written_once_in_the_schema(tmp_path):
    """conf/config.yaml holds interpolations only; a value it repeated (or contradicted) would be a second truth."""
    assert plain_values(CONF_DIR / "config.yaml") == {}
    planted = tmp_path / "config.yaml"
    planted.write_text((CONF_DIR / "config.yaml").read_text() + "train:\n  lr: 2.0e-3\n  loss_impl: ${oc.env:X,eager}\n")
    assert plain_values(planted) == {"train.lr": 2.0e-3}
    # what `python -m vlmsweep` composes for a section that is no group is exactly the schema's defaults
    cfg = compose([])
    for name in ("lora", "data", "train", "eval", "loop", "sweep"):
        assert getattr(cfg, name) == getattr(C.Config(), name), name
    assert cfg.seed == C.Config().seed


def test_every_option_file_sets_every_field_of_its_group():
    """A group's values are its option files and the defaults list names the default option: no composed run takes a
    value from the group dataclass's defaults (those are for a config built in Python)."""
    import yaml

    hints = typing.get_type_hints(C.Config)
    missing = {}
    for group in C.GROUPS:
        fields = {f.name for f in dataclasses.fields(hints[group])}
        for path in (CONF_DIR / group).glob("*.yaml"):
            if fields - set(yaml.safe_load(path.read_text())):
                missing[f"{group}/{path.name}"] = sorted(fields - set(yaml.safe_load(path.read_text())))
    assert missing == {}
    assert set(C.GROUPS) == {"model", "quant", "scope", "max_pixels", "data_mix", "domain_tag", "loss", "decoding",
                             "tracker", "adapters", "ocr_hint"}


@pytest.mark.parametrize("override, valid", [
    ("model.source=hub", "tiny, pretrained, shape, ocr"),
    ("quant.dtype=int8", "float32, bfloat16, float16"),
    ("quant.cpu_bf16=bf16", "float32, keep"),
    ("train.loss_impl=fast", "eager, chunked, liger, cce"),
    ("train.on_truncation=cut", "error, skip"),
    ("tracker.backend=mlflow", "wandb, none"),
    ("loop.on_empty_mine=wait", "train, stop"),
    ("adapters.routing=guess", "known, model"),
])  # fmt: skip
def test_a_closed_choice_is_refused_with_its_values_declared_on_the_field(override, valid):
    from vlmsweep.config.keys import key_choices

    key, value = override.split("=")
    assert ", ".join(key_choices(key)) == valid
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}: expected one of {valid}")):
        compose([override])
