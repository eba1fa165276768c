"""The one-node Slurm cluster of the rig (tests/rig/slurm.sh) and a shared directory on it.

On this single host the shared filesystem is any directory: miniwdl, sbatch and the node's job
scripts all see it at the same path.
"""

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile

import pytest
from WDL.runtime.config import Loader

from miniwdl_omnibio.engines.slurm.engine import SlurmEngine
from tests.conftest import require
from tests.helpers import config_env, wait_until

# tests/rig/slurm.sh: the opt-in QOS with MaxJobsPerUser=2 and MaxSubmitJobsPerUser=4
QOS = "limited"
QOS_LOCK = "/var/tmp/omnibio-slurm-qos-limited.lock"


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "--noheader"], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and bool(done.stdout.strip())


@pytest.fixture(scope="session")
def slurm_rig(docker_rig):
    require(slurm_answers(), "no Slurm cluster answers sinfo (tests/rig/slurm.sh starts one)")


def accounting_answers() -> bool:
    """slurmdbd answers and holds the rig's QOS with its two limits."""
    if shutil.which("sacctmgr") is None:
        return False
    done = subprocess.run(
        [
            "sacctmgr",
            "--noheader",
            "--parsable2",
            "show",
            "qos",
            QOS,
            "format=MaxJobsPU,MaxSubmitPU",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode == 0 and done.stdout.strip() == "2|4"


@pytest.fixture(scope="session")
def accounting(slurm_rig):
    require(accounting_answers(), f"no slurmdbd holding QOS {QOS!r} (tests/rig/slurm.sh)")


@pytest.fixture
def qos_alone(accounting):
    """The QOS's limits count every job of the user (root, for every test here): tests that
    fill them run one at a time on this host, whichever checkout or pytest process runs them."""
    with open(QOS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_dir(slurm_rig):
    path = tempfile.mkdtemp(prefix="omnibio-slurm-shared-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rundir(shared_dir, request):
    path = tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=shared_dir)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def slurm_config(shared_dir, results=False, **slurm_keys):
    """miniwdl config: the shared directory at the same path everywhere, quick polls; with
    ``results``, RESULT_URI under <shared dir>/results. The start-time probe job is off (one more
    job before each of the suite's ~110 Slurm runs): ``probe="true"`` where it is tested."""
    return {
        "omnibio": {
            "result_uri_prefix": f"file://{shared_dir}/results" if results else "",
            "retry_wait": "0",
        },
        "omnibio_slurm": {
            "mount_path": shared_dir,
            "poll_seconds": "0.5",
            "squeue_seconds": "2",
            "submit_linger_seconds": "0.3",
            "probe": "false",
            **slurm_keys,
        },
    }


def active_jobs(prefix: str) -> list[str]:
    """Jobs (and array elements) whose name starts with ``prefix`` that Slurm still holds as
    PENDING, RUNNING or COMPLETING."""
    done = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=PD,R,CG,CF,S", "--format=%i|%j"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line.split("|")[0]
        for line in done.stdout.splitlines()
        if line.split("|")[-1].startswith(prefix)
    ]


def squeue_jobs(*args: str) -> list[list[str]]:
    """squeue lines (``--format`` given in ``args``) split at "|"; none when the ids are gone."""
    done = subprocess.run(
        ["squeue", "--noheader", "--array", *args], capture_output=True, text=True
    )
    return [line.split("|") for line in done.stdout.splitlines() if line.strip()]


def sacct(*args: str) -> list[list[str]]:
    """sacct's allocation lines (no steps) from the accounting database, split at "|"."""
    done = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "--allocations", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("|") for line in done.stdout.splitlines() if line.strip()]


def engine_config(shared_dir, monkeypatch, **slurm_keys) -> Loader:
    """The configuration miniwdl would load, from slurm_config(shared_dir, **slurm_keys)."""
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    for key, value in config_env(slurm_config(shared_dir, **slurm_keys)).items():
        monkeypatch.setenv(key, value)
    return Loader(logging.getLogger("test"), filenames=[])


def start_engine(shared_dir, monkeypatch, **slurm_keys) -> SlurmEngine:
    """An engine in this process, started as miniwdl starts it (without the probe job unless
    ``probe="true"``)."""
    config = engine_config(shared_dir, monkeypatch, **slurm_keys)
    return SlurmEngine.start(config, logging.getLogger("test"))


class Blockers:
    """``count`` jobs of this user, each holding a CPU until ``release()`` (or the end of the
    ``with`` block, which cancels any left): a busy node, or a user at a QOS limit."""

    def __init__(self, directory: str, count: int, *options: str) -> None:
        self.go = os.path.join(directory, "blockers-go")
        self.ids: list[str] = []
        for _ in range(count):
            done = subprocess.run(
                ["sbatch", "--parsable", "--job-name=omnibio-test-blocker", "--mem=16M"]
                + ["--time=10", "--output=/dev/null", "--error=/dev/null", *options]
                + [f"--wrap=while [ ! -e {self.go} ]; do sleep 0.2; done"],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                self.__exit__()
                raise AssertionError(f"sbatch refused a blocker job: {done.stderr.strip()}")
            self.ids.append(done.stdout.strip().split(";")[0])

    def states(self) -> list[str]:
        return [f[1] for f in squeue_jobs(f"--jobs={','.join(self.ids)}", "--format=%i|%T")]

    def wait_running(self, count: int) -> None:
        """Until ``count`` of them run (the jobs other tests have on the node end first)."""
        wait_until(
            lambda: self.states().count("RUNNING") == count, f"{count} blocker jobs running", 600
        )

    def release(self) -> None:
        with open(self.go, "w"):
            pass

    def __enter__(self) -> "Blockers":
        return self

    def __exit__(self, *exc) -> None:
        if self.ids:
            subprocess.run(["scancel", *self.ids], check=False)
