import os
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (the README's `-n 2`) each worker runs torch on one thread, subprocesses
# included: two workers on two cores, not four threads contending for them. Set before any
# test imports torch, so that torch's default is one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_finish(session):
    """One torch thread again once every test module is imported: importing ``dcor``
    (test_features.py, collected by every worker) sets torch's threads to the cores, and
    two workers of two threads each on two cores made the slow tests 3 to 6 times slower
    (the default-run test took 747 s of CPU under the suite, 125 s alone)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A run small enough for unit tests: 16x16 digits, a few batches.
TINY = [
    "data.image_size=16",
    "data.limit_train=96",
    "data.limit_test=48",
    "train.batch_size=32",
    "train.epochs=1",
]


@pytest.fixture
def tiny():
    from privsplit.config import Config, apply_overrides

    def make(*extra: str):
        return apply_overrides(Config(), [*TINY, *extra])

    return make


def _unpacked(tmp_path_factory, archive: str, what: str) -> Path:
    """``../shared/data/<archive>`` unpacked into a scratch folder; the test is skipped when it is absent."""
    path = SHARED_DATA / archive
    if not path.exists():
        pytest.skip(f"real {what} is not in ../shared/data")
    import tarfile

    dest = tmp_path_factory.mktemp(what.split()[0].lower())
    with tarfile.open(path) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory):
    """Real CIFAR-10 (JPEG copy) unpacked from ../shared/data; skipped when absent."""
    return _unpacked(tmp_path_factory, "cifar10-jpeg.tar.gz", "CIFAR-10") / "cifar10"


@pytest.fixture(scope="session")
def utkface_root(tmp_path_factory):
    """Real UTKFace (aligned & cropped) unpacked from ../shared/data; skipped when absent."""
    return _unpacked(tmp_path_factory, "utkface-aligned-cropped.tar.gz", "UTKFace")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "privsplit", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Each test leaves torch's CPU threads as it found them: a command run in-process with
    ``--threads 1`` (or a config's ``train.threads``) sets them for the whole process, and
    every later test would then train on one core."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
