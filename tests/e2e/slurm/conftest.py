"""The one-node Slurm cluster of the rig (tests/rig/slurm.sh) and a shared directory on it.

On this single host the shared filesystem is any directory: miniwdl, sbatch and the node's job
scripts all see it at the same path.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.conftest import require


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    done = subprocess.run(["sinfo", "--noheader"], capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and bool(done.stdout.strip())


@pytest.fixture(scope="session")
def slurm_rig(docker_rig):
    require(slurm_answers(), "no Slurm cluster answers sinfo (tests/rig/slurm.sh starts one)")


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
    ``results``, RESULT_URI under <shared dir>/results."""
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
