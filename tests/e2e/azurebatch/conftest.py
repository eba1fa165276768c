"""Fixtures for omnibio_azurebatch end to end: the Batch emulator, Azurite, a shared directory."""

import json
import os
from collections.abc import Sequence

import pytest
from azure.storage.blob import BlobServiceClient

from tests.conftest import require
from tests.emulators.azurebatch_emulator import BatchEmulator
from tests.emulators.azurite import Azurite, azurite_binary
from tests.helpers import Run, run_miniwdl

BACKEND = "omnibio_azurebatch"
CONTAINER = "omnibio"  # the blob container results go to
READONLY_VIEW = "/mnt/omnibio_inputs"


@pytest.fixture(scope="session")
def azurite(docker_rig):
    require(azurite_binary() is not None, "Azurite is not installed (tests/rig/setup.sh)")
    with Azurite() as blob:
        BlobServiceClient.from_connection_string(blob.connection_string).create_container(CONTAINER)
        yield blob


@pytest.fixture(scope="session")
def emulator(docker_rig):
    with BatchEmulator(requeue_delay=3.0) as batch:
        yield batch


@pytest.fixture
def batch(emulator):
    emulator.reset_counts()
    emulator.throttle(0)
    emulator.configure()
    yield emulator
    emulator.configure()


def azurebatch_config(
    batch: BatchEmulator, shared: str, azurite: Azurite | None = None, **overrides: str
) -> dict[str, dict[str, str]]:
    """miniwdl config for a run on the emulator; ``shared`` is the shared filesystem's root."""
    section = {
        "account_url": batch.url,
        "account_name": batch.account,
        "pool_id": "omnibio-pool",
        "mount_path": shared,
        "readonly_mount_path": READONLY_VIEW,
        "poll_seconds": "1",
        "list_seconds": "1",
    }
    section.update(overrides)
    config = {"omnibio_azurebatch": section, "scheduler": {"task_concurrency": "8"}}
    if azurite:
        config["omnibio"] = {
            "result_uri_prefix": f"azureblob://devstoreaccount1/{CONTAINER}/results"
        }
        config["task_runtime"] = {
            "env": json.dumps({"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
        }
    return config


def azurebatch_env(batch: BatchEmulator, azurite: Azurite | None = None) -> dict[str, str]:
    env = {"AZURE_BATCH_ACCOUNT_KEY": batch.key}
    if azurite:
        env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    return env


def run_azurebatch(
    batch: BatchEmulator,
    workdir: str | os.PathLike,
    wdl: str,
    inputs: Sequence[str] = (),
    azurite: Azurite | None = None,
    env: dict[str, str] | None = None,
    **overrides: str,
) -> Run:
    """A miniwdl run of ``wdl`` on the emulator, to its end (``env`` replaces the account key's)."""
    return run_miniwdl(
        wdl,
        list(inputs),
        str(workdir),
        backend=BACKEND,
        config=azurebatch_config(batch, str(workdir), azurite, **overrides),
        env=azurebatch_env(batch, azurite) if env is None else env,
    )


def write(path: str | os.PathLike, text: str) -> str:
    with open(path, "w") as outfile:
        outfile.write(text)
    return str(path)


def read_log(run_dir: str) -> str:
    """Every log file miniwdl wrote for the run."""
    text = []
    for current, _, files in os.walk(run_dir):
        for name in files:
            if name.endswith(".log") or name in ("stderr.txt", "error.json"):
                with open(os.path.join(current, name), errors="replace") as infile:
                    text.append(infile.read())
    return "\n".join(text)
