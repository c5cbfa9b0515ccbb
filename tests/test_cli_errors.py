"""Command-line mistakes give one line naming the fix, never a traceback or an empty run folder; a multirun
says how many runs it does; a user's own sweep file resolves like the shipped ones."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import CONF_DIR, SWEEPS_DIR
from helpers import REPO
from vlmsweep.cli.checks import check_command_line
from vlmsweep.config.keys import nearest_keys, unknown_keys_in


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    # no HYDRA_FULL_ERROR: the user's environment
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "vlmsweep", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, fix", [
    (["max_pixels=1024"], "write max_pixels=1024tok"),
    (["+train.lerning_rate=1"], "did you mean train.lr"),
    (["train.lerning_rate=1"], "did you mean train.lr"),
    (["-m", "max_pixels=256,1000"], "write max_pixels.visual_tokens=256,1000"),
    (["quant=bf61"], "did you mean quant=bf16? the options are bf16, fp16, fp32, nf4"),
    (["train.max_steps=abc"], "train.max_steps takes an integer, not 'abc'"),
])  # fmt: skip
def test_a_mistake_is_one_line_with_the_fix_and_leaves_no_folder(tmp_path, args, fix):
    proc = _cli(*args, "tracker=none", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fix in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "outputs").exists()


def test_a_cross_field_error_after_composition_is_one_line_and_removes_hydras_folder(tmp_path):
    proc = _cli("data_mix.receipt_ratio=2", "tracker=none", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "data_mix.receipt_ratio=2.0: expected a value in [0, 1]" in proc.stderr
    # Hydra had made outputs/DATE/TIME/.hydra; nothing is left, outputs/ included (made for this run alone)
    assert not (tmp_path / "outputs").exists()
    (tmp_path / "outputs" / "earlier").mkdir(parents=True)  # a folder with other runs in it stays
    assert _cli("data_mix.receipt_ratio=2", "tracker=none", cwd=tmp_path).returncode == 2
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["earlier"]


def test_help_names_the_tool_its_commands_and_every_config_group(tmp_path):
    proc = _cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("vlmsweep: fine-tune") and "powered by Hydra" not in proc.stdout
    assert "python -m vlmsweep -m quant=nf4,bf16 scope=llm,all" in proc.stdout
    groups = dict(line.split(": ", 1) for line in proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
                  .splitlines() if ": " in line)
    assert set(groups["sweep"].split(", ")) == {p.stem for p in SWEEPS_DIR.glob("*.yaml")}
    assert "max_pixels" in groups and not (tmp_path / "outputs").exists()


def test_nearest_keys_and_keys_of_a_users_config_file():
    assert nearest_keys("train.lerning_rate")[0] == "train.lr"
    assert nearest_keys("trian.lr")[0] == "train.lr"
    assert nearest_keys("eval.max_new_token") == ["eval.max_new_tokens"]
    # a composed config holding a typo (e.g. from the user's own YAML); free-form mappings are not checked
    cfg = {"train": {"lr": 1.0, "lerning_rate": 2}, "data_mix": {"weights": {"my_domain": 1.0}}, "hydra": {"x": 1}}
    assert unknown_keys_in(cfg) == ["train.lerning_rate"]


def test_the_run_count_of_a_multirun():
    assert check_command_line(["-m", "quant=nf4,bf16", "scope=llm,all"]) == (None, 4)
    assert check_command_line(["-m", "quant=nf4,bf16", "seed=range(3)"]) == (None, 6)
    assert check_command_line(["quant=nf4"]) == (None, None)  # a single run
    assert check_command_line(["-m", "+sweep=max_pixels"]) == (None, None)  # the Optuna sweeper counts its trials
    assert check_command_line(["-m", "max_pixels=256tok,512tok", "data_mix.weights.receipt=2"]) == (None, 2)


def test_a_users_own_sweep_file_resolves_like_the_shipped_ones(tmp_path):
    """A sweep in the user's config folder (Hydra's search path: --config-dir or hydra.searchpath) is
    `+sweep=NAME` as the packaged ones are, with the same sweeper and storage."""
    from hydra import compose, initialize_config_dir

    from vlmsweep.config import register_configs
    from vlmsweep.config.resolvers import register_resolvers

    (tmp_path / "sweep").mkdir()
    shipped = (SWEEPS_DIR / "lora_rank.yaml").read_text()
    (tmp_path / "sweep" / "my_rank.yaml").write_text(
        shipped.replace("name: lora_rank", "name: my_rank").replace("choice(4, 8, 16, 32, 64)", "choice(2, 4)"))
    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=my_rank", f"hydra.searchpath=[file://{tmp_path}]"],
                      return_hydra_config=True)
    assert cfg.sweep.name == "my_rank" and cfg.hydra.sweep.dir == "outputs/sweeps/my_rank"
    assert cfg.hydra.sweeper.params["lora.r"] == "choice(2, 4)"
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.vlmsweep_optuna.OptunaSweeper"
    # the command-line check knows the user's groups from their folder too
    assert check_command_line(["--config-dir", str(tmp_path), "-m", "+sweep=my_rank"]) == (None, None)


def test_a_group_option_that_names_no_file_is_one_line_with_the_options(tmp_path):
    message, _ = check_command_line(["quant=bf61"])
    assert message == ("quant=bf61: quant has no option 'bf61'; did you mean quant=bf16? the options are bf16, fp16, "
                       "fp32, nf4 (files in conf/quant/ or your --config-dir's quant/)")
    message, _ = check_command_line(["-m", "quant=nf4,bf61", "scope=llm"])  # one bad value of a sweep
    assert message.startswith("quant=nf4,bf61: quant has no option 'bf61'")
    assert "did you mean +experiment=" in check_command_line(["+experiment=exp9"])[0]
    # a user's option in their own folder is an option; one in neither folder is not
    (tmp_path / "quant").mkdir()
    (tmp_path / "quant" / "my_nf4.yaml").write_text("name: my_nf4\n")
    assert check_command_line(["--config-dir", str(tmp_path), "quant=my_nf4"]) == (None, None)
    assert "the options are bf16, fp16, fp32, my_nf4, nf4" in check_command_line(["--config-dir", str(tmp_path), "quant=my_nf5"])[0]
    # a search path this cannot list (a package): Hydra judges the option
    assert check_command_line(["quant=other", "hydra.searchpath=[pkg://somewhere.conf]"]) == (None, None)


def test_a_value_its_key_cannot_hold_is_one_line_judged_as_omegaconf_would():
    assert check_command_line(["train.max_steps=abc"])[0] == "train.max_steps=abc: train.max_steps takes an integer, not 'abc'"
    assert check_command_line(["train.max_steps=2.5"])[0] == "train.max_steps=2.5: train.max_steps takes an integer, not 2.5"
    assert check_command_line(["-m", "train.lr=1e-3,fast"])[0] == "train.lr=1e-3,fast: train.lr takes a number, not 'fast'"
    assert check_command_line(["train.enabled=maybe"])[0].endswith("train.enabled takes true or false, not 'maybe'")
    # what composing accepts passes: an int for a float, OmegaConf's yes/no, an interpolation, a range sweep
    for ok in (["train.lr=1"], ["train.enabled=yes"], ["train.max_steps=${train.batch_size}"], ["-m", "lora.r=range(4,9,4)"]):
        assert check_command_line(ok)[0] is None, ok


def test_a_wrong_model_adapter_is_one_line_recorded_in_run_info(tmp_path, offline_env):
    """The README's `train.enabled=false model.adapter=PATH` with a PATH that is no folder: one line naming it (it was
    a traceback ending in a FileNotFoundError that said "no adapter_config.json there" of a folder that did not exist)."""
    import json

    proc = _cli("train.enabled=false", "model.adapter=RUN_DIR/adapter", "data.test_size=1", "tracker=none",
                "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "model.adapter=RUN_DIR/adapter: no such folder; point it at a run's adapter/" in errors[0]
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["status"] == "failed" and "no such folder" in info["error"]


@pytest.mark.parametrize("argv", [
    [],
    ["-m", "quant=nf4,bf16", "scope=llm,all"],
    ["--multirun", "--config-dir", "/tmp/x", "+sweep=lr"],
    ["-cd", "/tmp/x", "-cn", "other", "-cp", "conf", "train.lr=1"],
    ["--cfg", "job", "--resolve", "-p", "train", "seed=1"],
    ["-c", "hydra", "--info"],
    ["-i", "defaults-tree", "quant=nf4"],
    ["--info", "plugins", "-r", "--hydra-help"],
    ["-h", "--shell-completion", "install=bash"],
    ["--experimental-rerun", "outputs/x/.hydra/config.pickle"],
    ["train.lr=1", "--unknown-flag", "seed=2"],
])  # fmt: skip
def test_hydra_flags_parse_as_hydras_own_parser_does(argv):
    """vlmsweep's parser of Hydra's flags (the package imports no hydra._internal) against Hydra 1.3's own."""
    from hydra._internal.utils import get_args_parser

    from vlmsweep.cli.checks import hydra_flags

    ours, our_rest = hydra_flags().parse_known_args(argv)
    theirs, their_rest = get_args_parser().parse_known_args(argv)
    assert vars(ours) == {"version": False, **vars(theirs)} and our_rest == their_rest


def test_flags_hydra_would_refuse_are_left_to_hydra():
    assert check_command_line(["--cfg", "everything", "quant=bf61"]) == (None, None)


def test_a_closed_choice_on_the_command_line_is_one_line_with_its_values():
    assert check_command_line(["train.loss_impl=fast"])[0] == (
        "train.loss_impl=fast: train.loss_impl takes one of eager, chunked, liger, cce, not 'fast'")
    assert check_command_line(["-m", "train.loss_impl=eager,chunked"]) == (None, 2)
    assert check_command_line(["adapters.routing=guess"])[0].endswith("adapters.routing takes one of known, model, not 'guess'")
