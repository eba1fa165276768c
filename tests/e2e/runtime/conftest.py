"""Real stores on 127.0.0.1 for the runtime's tests: moto (S3), Azurite (Blob) and
gcp-storage-emulator (GCS, a Python package from the test extra), each spoken to by its real SDK."""

import contextlib
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import require
from tests.emulators.moto_server import free_port

BUCKET = "omnibio-runtime"  # in every store; its own on the session's moto and Azurite


@pytest.fixture(scope="session")
def moto(moto_server):
    return moto_server.bucket(BUCKET)


@pytest.fixture(scope="session")
def azurite(azurite_server):
    return azurite_server.container(BUCKET)


@pytest.fixture(scope="session")
def gcs():
    """STORAGE_EMULATOR_HOST for google-cloud-storage, pointing at a fresh in-memory emulator."""
    binary = shutil.which("gcp-storage-emulator")
    require(binary is not None, "gcp-storage-emulator is not installed (pip install -e '.[test]')")
    port = free_port()
    process = subprocess.Popen(
        [str(binary), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{host}/storage/v1/b", timeout=2).status_code < 500:
                break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"gcp-storage-emulator did not answer on {host}")
    env = {"STORAGE_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": "omnibio-test"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from google.cloud import storage

        storage.Client().create_bucket(BUCKET)
    yield env
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def store_env(request, monkeypatch, tmp_path):
    """(result URI prefix, environment) of the store named by the test's parameter."""
    scheme = request.param
    if scheme == "file":
        env = {}
        prefix = f"file://{tmp_path}/results"
    elif scheme == "s3":
        env = request.getfixturevalue("moto").env()
        prefix = f"s3://{BUCKET}/runs"
    elif scheme == "azureblob":
        blob = request.getfixturevalue("azurite")
        env = {"AZURE_STORAGE_CONNECTION_STRING": blob.connection_string}
        prefix = f"azureblob://devstoreaccount1/{BUCKET}/runs"
    else:
        env = request.getfixturevalue("gcs")
        prefix = f"gs://{BUCKET}/runs"
    for name in ("AWS_PROFILE", "AZURE_AUTH", "RESULT_MAX_BYTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return prefix, {**os.environ, **env}


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """This checkout as a wheel, built offline (no build isolation: setuptools and wheel are
    installed), so tool images get the runtime under test without any index."""
    from tests.helpers import REPO

    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), REPO],
        check=True,
        capture_output=True,
    )
    return wheels


CHECKOUT_IMAGE = "omnibio/runtime-checkout:test"


@pytest.fixture(scope="session")
def checkout_image(docker_rig, wheelhouse, tmp_path_factory):
    """omnibio/base:bookworm with this checkout's runtime (file:// results need no SDK)."""
    context = tmp_path_factory.mktemp("checkout-image")
    shutil.copytree(wheelhouse, context / "wheels")
    (context / "Dockerfile").write_text(
        "FROM omnibio/base:bookworm\nCOPY wheels /tmp/wheels\n"
        "RUN pip install -q --no-index --no-deps --break-system-packages /tmp/wheels/*.whl"
        " && rm -rf /tmp/wheels\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", CHECKOUT_IMAGE, str(context)],
        check=True,
        capture_output=True,
    )
    return CHECKOUT_IMAGE
