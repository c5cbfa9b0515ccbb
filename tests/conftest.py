"""Shared fixtures: offline environment, one cache for the embedded model and datasets per session."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # Hydra's config groups
SWEEPS_DIR = CONF_DIR / "sweep"  # the Optuna sweeps (+sweep=NAME)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per xdist worker (and for the command lines it starts): the workers already fill
    # the cores, and two OpenMP pools per core would make each other wait.
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def pytest_addoption(parser):
    parser.addoption("--shuffle", type=int, default=None, metavar="SEED",
                     help="run the tests in an order shuffled by SEED (the same order on every xdist worker): a test "
                          "that passes only after another has run fails under some seed")


def pytest_collection_modifyitems(config, items):
    # Written here rather than taken from pytest-randomly, which also reseeds `random` before every test and so
    # changes what the seeded generators under test draw; this changes the order and nothing else.
    seed = config.getoption("--shuffle")
    if seed is not None:
        random.Random(seed).shuffle(items)
    # Collection order otherwise. Not the slow tests first: xdist's load scheduling sends each worker a contiguous
    # first quarter of the list, so one worker got every end-to-end run and the suite took minutes longer.


# The user's cache (as a run's cache_dir): the warmed embedded model, the default `model=tiny_warm`, is assembled there
# once from the package's shipped files (seconds) and shared with every session's own cache.
USER_CACHE = Path(os.path.expanduser(os.environ.get("VLMSWEEP_CACHE", "~/.cache/vlmsweep")))


def share_warm_model(cache: Path) -> Path:
    """The warmed model of the user's cache (assembled there if missing, under a lock), linked into `cache`: the
    default model of every run a test starts, found as a run finds it (cache_dir/models/tiny-warm-<key>)."""
    from vlmsweep.model.shipped import ensure_warm_model

    built = ensure_warm_model(USER_CACHE)
    link = cache / "models" / built.name
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(built, target_is_directory=True)
        except FileExistsError:  # another worker linked it first
            pass
    return link


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory):
    """No hub, no W&B server; one cache so the tiny model and datasets are built once per session."""
    cache = Path(os.environ.get("VLMSWEEP_TEST_CACHE") or tmp_path_factory.mktemp("vlmsweep-cache"))
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "WANDB_MODE", "VLMSWEEP_CACHE", "WANDB_SILENT")}
    os.environ.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", VLMSWEEP_CACHE=str(cache), WANDB_SILENT="true")
    if cache.resolve() != USER_CACHE.resolve():
        share_warm_model(cache)
    yield cache
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The folder NAME, made by `make(folder)` once in the whole test session, whichever xdist worker asks first; the
    others wait for it under a file lock and share it (an expensive module fixture would otherwise run once per worker
    its tests land on). A folder whose making was cut short is made again."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name  # the session's shared folder
    with FileLock(f"{folder}.lock"):
        if not (folder / ".made").is_file():
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def cache_dir(offline_env) -> Path:
    return offline_env


@pytest.fixture(scope="session")
def warm_path(cache_dir) -> Path:
    """The warmed embedded model (the default model), as the session's cache holds it."""
    from vlmsweep.model.shipped import ensure_warm_model

    return ensure_warm_model(cache_dir)


@pytest.fixture(scope="session")
def tiny_path(cache_dir) -> Path:
    from vlmsweep.model.tiny import ensure_tiny_model

    return ensure_tiny_model(cache_dir)


def compose(overrides: list[str], output_dir: Path | None = None):
    """The typed Config exactly as `python -m vlmsweep OVERRIDES` would build it."""
    from vlmsweep.config.compose import compose as package_compose

    return package_compose(overrides, output_dir or "unused")


# Few steps, few samples, short answers budget: end-to-end runs that take seconds on 2 cores.
FAST = [
    "train.max_steps=2",
    "train.batch_size=2",
    "train.logging_steps=1",
    "data.train_size=4",
    "data.test_size=2",
    "data.mining_size=2",
    "data.regression_size=2",
    "eval.batch_size=2",
    "eval.max_new_tokens=24",
    "tracker=none",
]
