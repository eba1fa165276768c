"""The preflight on omnibio_docker: every check passes on the rig, and each kind of mistake is
one ✗ line naming its fix."""

import os
import signal
import subprocess
import sys

import docker
import pytest

from tests.e2e.preflight.conftest import write_cfg
from tests.helpers import containers_with_label, wait_until

pytestmark = pytest.mark.usefixtures("docker_rig")

DOCKER = {"scheduler": {"container_backend": "omnibio_docker"}}


def test_everything_passes_with_a_file_result_prefix(check, tmp_path):
    results = tmp_path / "results"
    checked = check({**DOCKER, "omnibio": {"result_uri_prefix": f"file://{results}"}})
    assert checked.returncode == 0
    for name in ("backend", "config", "omnibio_docker start (Docker engine answers)"):
        assert checked.passed(name)
    assert checked.passed("result prefix on this host")
    assert checked.passed("probe task")
    assert checked.passed("result prefix writable from a task")
    assert checked.passed("result prefix readable from this host")
    assert not list(results.rglob("results.json"))  # the probe's result is deleted


@pytest.mark.parametrize(
    "config,name,words",
    [
        (
            {"scheduler": {"container_backend": "docker_swarm"}},
            "backend",
            ["'docker_swarm' is not an omnibio backend", "container_backend", "omnibio_docker"],
        ),
        ({**DOCKER, "omnibio_docker": {"netwrok": "x"}}, "config", ["[omnibio_docker] netwrok"]),
        (
            {**DOCKER, "omnibio": {"result_check": "maybe"}},
            "config",
            ["[omnibio] result_check", "'maybe'"],
        ),
        (
            {**DOCKER, "omnibio_docker": {"network": "no-such-net"}},
            "omnibio_docker start (Docker engine answers)",
            ["no-such-net"],
        ),
        (
            {**DOCKER, "omnibio": {"result_uri_prefix": "file:///proc/omnibio-results"}},
            "result prefix on this host",
            ["cannot write in /proc/omnibio-results", "[omnibio] result_uri_prefix"],
        ),
    ],
)
def test_a_mistake_is_one_line_naming_its_fix(check, config, name, words):
    checked = check(config)
    assert checked.returncode == 1
    assert checked.failed(name, *words)
    assert not checked.line("probe task")  # later checks need this one


def test_an_image_without_the_tool_runtime(check, tmp_path):
    prefix = {"omnibio": {"result_uri_prefix": f"file://{tmp_path}/results"}}
    checked = check({**DOCKER, **prefix}, args=["--image", "ubuntu:22.04"])
    assert checked.passed("probe task")
    assert checked.failed("result prefix writable from a task", "ModuleNotFoundError", "--image")


def test_an_image_that_cannot_be_pulled(check, tmp_path):
    checked = check(DOCKER, args=["--image", "omnibio/no-such-image:1", "--dir", str(tmp_path)])
    assert checked.failed("probe task", "omnibio/no-such-image:1", "--image")
    kept = [d for d in os.listdir(tmp_path) if d.startswith("omnibio-check-")]
    assert len(kept) == 1 and str(tmp_path / kept[0]) in checked.line("probe task")


@pytest.fixture(scope="module")
def slow_image(tmp_path_factory):
    """An image whose python3 never returns, so the probe task runs until it is cancelled."""
    context = tmp_path_factory.mktemp("slow-image")
    (context / "Dockerfile").write_text(
        "FROM omnibio/base:bookworm\n"
        "RUN printf '#!/bin/sh\\nexec sleep 600\\n' > /usr/local/bin/python3 "
        "&& chmod +x /usr/local/bin/python3\n"
    )
    tag = "omnibio/preflight-slow:test"
    docker.from_env().images.build(path=str(context), tag=tag, rm=True)
    yield tag
    docker.from_env().images.remove(tag, force=True)


def test_sigterm_cancels_the_probe_task(tmp_path, slow_image):
    cfg = write_cfg(str(tmp_path / "my.cfg"), DOCKER)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINIWDL")}
    argv = [sys.executable, "-m", "miniwdl_omnibio", "check", "--cfg", cfg]
    argv += ["--image", slow_image, "--dir", str(tmp_path)]
    proc = subprocess.Popen(argv, env=clean, stdout=subprocess.PIPE, text=True)

    def probe_started() -> list:
        assert proc.poll() is None, "the check ended before its probe started"
        return containers_with_label("omnibio.task", "omnibio_preflight_probe")

    wait_until(probe_started, "the probe task's container")
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "✗ interrupted" in stdout
    assert not containers_with_label("omnibio.task", "omnibio_preflight_probe")
    assert not [d for d in os.listdir(tmp_path) if d.startswith("omnibio-check-")]
