"""The preflight on omnibio_slurm against the rig's one-node Slurm cluster."""

import os
import shutil
import tempfile

import pytest

START = "omnibio_slurm start (Slurm commands, controller, partition, account)"


@pytest.fixture
def shared(slurm_rig):
    """A directory the node sees at the same path (one host), world-readable for job users."""
    path = tempfile.mkdtemp(prefix="omnibio-check-slurm-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def slurm(shared, **keys):
    return {
        "scheduler": {"container_backend": "omnibio_slurm"},
        "omnibio": {"result_uri_prefix": f"file://{shared}/results"},
        "omnibio_slurm": {"mount_path": shared, "poll_seconds": "0.5", **keys},
    }


def test_everything_passes(check, shared):
    checked = check(slurm(shared))
    assert checked.returncode == 0
    assert checked.passed("shared filesystem from a task")
    assert checked.passed("result prefix readable from this host")


def test_an_unknown_partition(check, shared):
    checked = check(slurm(shared, partition="no-such-partition"))
    assert checked.failed(START, "[omnibio_slurm] partition", "no-such-partition")
