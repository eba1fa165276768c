"""The preflight on omnibio_tes against the test TES server (bearer token, shared directory)."""

import os

import pytest

from tests.e2e.tes.support import READONLY_VIEW
from tests.emulators.tes_server import TesServer

TOKEN = "preflight-token-4f1c"
START = "omnibio_tes start (endpoint, credentials, service-info)"


@pytest.fixture(scope="module")
def server(shared_dir):
    volumes = [shared_dir, f"{shared_dir}:{READONLY_VIEW}:ro"]  # shared-filesystem mode
    with TesServer(worker_volumes=volumes, token=TOKEN, workers=2) as tes:
        yield tes


def tes(server, shared_dir, **keys):
    section = {
        "url": server.url,
        "token_env": "TES_TOKEN",
        "mount_path": shared_dir,
        "readonly_mount_path": READONLY_VIEW,
        "poll_seconds": "0.5",
    }
    return {
        "scheduler": {"container_backend": "omnibio_tes"},
        "omnibio": {"result_uri_prefix": f"file://{shared_dir}/results"},
        "omnibio_tes": {**section, **keys},
    }


def test_everything_passes(check, server, shared_dir):
    checked = check(tes(server, shared_dir), env={"TES_TOKEN": TOKEN})
    assert checked.returncode == 0
    for name in (START, "shared filesystem on this host", "shared filesystem from a task"):
        assert checked.passed(name)
    assert checked.passed("result prefix readable from this host")
    assert not [d for d in os.listdir(shared_dir) if d.startswith(".omnibio-check-")]


@pytest.mark.parametrize(
    "keys,env,name,words",
    [
        ({"url": "http://127.0.0.1:9"}, {"TES_TOKEN": TOKEN}, START, ["[omnibio_tes] url"]),
        ({}, {}, START, ["[omnibio_tes] token_env", "TES_TOKEN", "not set"]),
        ({}, {"TES_TOKEN": "wrong-token-9a7e"}, START, ["rejected", "token_env"]),
        # the workers do not mount the shared filesystem where the configuration says: the
        # engine's own probe task at start says so
        (
            {"mount_path": "/srv/not-mounted"},
            {"TES_TOKEN": TOKEN},
            START,
            ["[omnibio_tes] mount_path /srv/not-mounted", "probe task"],
        ),
    ],
)
def test_a_mistake_is_one_line_naming_its_fix(check, server, shared_dir, keys, env, name, words):
    if "mount_path" in keys:
        keys = {**keys, "host_mount_path": shared_dir}
    checked = check(tes(server, shared_dir, **keys), env=env)
    assert checked.failed(name, *words)
    assert TOKEN not in checked.stdout + checked.stderr
    assert "wrong-token-9a7e" not in checked.stdout + checked.stderr


def test_a_result_prefix_off_the_shared_filesystem(check, server, shared_dir, tmp_path):
    config = tes(server, shared_dir)
    config["omnibio"]["result_uri_prefix"] = f"file://{tmp_path}/results"
    checked = check(config, env={"TES_TOKEN": TOKEN})
    assert checked.failed("result prefix on this host", "not on the shared filesystem", shared_dir)
