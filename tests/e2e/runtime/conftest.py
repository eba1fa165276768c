"""Real stores on 127.0.0.1 for the runtime's tests: moto (S3), Azurite (Blob) and
gcp-storage-emulator (GCS, a Python package from the test extra), each spoken to by its real SDK."""

import base64
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import requests

from tests.conftest import require
from tests.emulators.azurite import Azurite, azurite_binary
from tests.emulators.moto_server import MotoServer, free_port

BUCKET = "omnibio-results"


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = MotoServer(str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    server.client("s3").create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def azurite():
    require(azurite_binary() is not None, "Azurite is not installed (tests/rig/setup.sh)")
    with Azurite() as blob:
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(blob.connection_string).create_container(BUCKET)
        yield blob


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
    """This checkout as wheels (the plugin and compat/'s omni_tool_runtime), built offline (no
    build isolation: setuptools and wheel are installed), so tool images get the runtime under
    test without any index."""
    from tests.helpers import REPO

    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), REPO, f"{REPO}/compat"],
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


def _token(audience: str) -> str:
    """An unsigned JWT with the claims Azurite's basic OAuth check reads (issuer prefix,
    audience, nbf/exp/iat: Azurite's BlobTokenAuthenticator.authenticateBasic), no signature
    check."""

    def part(claims: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"aud": audience, "iss": "https://sts.windows.net/omnibio-test/", "iat": now}
    claims.update(nbf=now - 60, exp=now + 3600, oid="omnibio-test")
    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.fixture(scope="session")
def managed_identity_blob(tmp_path_factory):
    """Azure Blob without a connection string: Azurite over HTTPS with OAuth (``--oauth basic``,
    a self-signed certificate for 127.0.0.1) and a managed-identity token endpoint on 127.0.0.1
    (App Service's IDENTITY_ENDPOINT / IDENTITY_HEADER protocol, which DefaultAzureCredential's
    ManagedIdentityCredential speaks). Yields (environment, token requests seen)."""
    binary = azurite_binary()
    require(binary is not None, "Azurite is not installed (tests/rig/setup.sh)")
    require(shutil.which("openssl") is not None, "openssl is not installed")
    where = tmp_path_factory.mktemp("azurite-oauth")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    asked: list[dict] = []

    class Identity(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            asked.append({**query, "header": self.headers.get("X-IDENTITY-HEADER")})
            resource = query.get("resource", "")
            body = json.dumps(
                {
                    "access_token": _token(resource),
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": resource,
                    "token_type": "Bearer",
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    identity = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Identity)
    threading.Thread(target=identity.serve_forever, daemon=True).start()
    port = free_port()
    process = subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--oauth", "basic"]
        + ["--cert", cert, "--key", key, "--location", str(where / "data")]
        + ["--skipApiVersionCheck", "--disableTelemetry", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"https://127.0.0.1:{port}/devstoreaccount1"
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                requests.get(endpoint, verify=cert, timeout=2)
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"Azurite (OAuth, HTTPS) did not answer on {endpoint}")
        env = {
            "AZURE_STORAGE_BLOB_ENDPOINT": endpoint,
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{identity.server_address[1]}/token",
            "IDENTITY_HEADER": "omnibio-test-header",
            "REQUESTS_CA_BUNDLE": cert,  # azure-core's requests transport trusts the certificate
        }
        yield env, asked
    finally:
        process.terminate()
        process.wait(timeout=30)
        identity.shutdown()
        identity.server_close()
