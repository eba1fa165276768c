"""Bad input on omnibio_docker: one clear line naming the cause, and nothing left behind."""

import os

import pytest

from miniwdl_omnibio.cli.selftest import run as selftest
from tests.helpers import containers_with_label, error_line, run_miniwdl, workflow_run_of

pytestmark = pytest.mark.usefixtures("docker_rig")

TASK = """
version 1.1
task t {{
  command <<< echo hi >>>
  runtime {{ docker: "{image}" memory: "{memory}" }}
}}
"""


def _run(workdir, image="ubuntu:22.04", memory="100M", config=None, env=None):
    wdl = workdir / "t.wdl"
    wdl.write_text(TASK.format(image=image, memory=memory))
    return run_miniwdl(str(wdl), [], str(workdir), config=config, env=env)


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (
            # a registry address where nothing listens: refused at once, no DNS, no network
            {"image": "127.0.0.1:1/nothing:1"},
            "docker image 127.0.0.1:1/nothing:1 is not on this host and could not be pulled: ",
        ),
        ({"memory": "lots"}, "invalid setting of runtime.memory, lots"),
        (
            {"config": {"omnibio": {"result_uri_prefix": "ftp://bucket/x"}}},
            "[omnibio] result_uri_prefix (env MINIWDL__OMNIBIO__RESULT_URI_PREFIX): result URI 'ftp://bucket/x' has unknown scheme 'ftp'",
        ),
        (
            {"config": {"omnibio_docker": {"network": "no-such-net"}}},
            "[omnibio_docker] network (env MINIWDL__OMNIBIO_DOCKER__NETWORK): 'no-such-net' is neither",
        ),
        (
            {"config": {"omnibio_docker": {"pull": "sometimes"}}},
            "[omnibio_docker] pull (env MINIWDL__OMNIBIO_DOCKER__PULL): 'sometimes' is not one of missing, always, never",
        ),
        (
            {"config": {"omnibio_docker": {"netwrk": "host"}}},
            "unknown configuration key(s) [omnibio_docker] netwrk",
        ),
        (
            {"env": {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}},
            "omnibio_docker cannot reach the Docker daemon at unix:///nonexistent/docker.sock",
        ),
    ],
    ids=[
        "missing-image",
        "bad-memory",
        "bad-result-uri",
        "bad-network",
        "bad-pull-policy",
        "unknown-key",
        "no-dockerd",
    ],
)
def test_one_clear_line_and_no_leftovers(workdir, kwargs, expected):
    run = _run(workdir, **kwargs)
    assert run.returncode != 0
    line = error_line(run)
    assert expected in line, (line, run.stderr[-2000:])
    assert "\n" not in line and "Traceback" not in line
    if run.dir:
        assert containers_with_label("omnibio.run", workflow_run_of(run.dir)) == []
        # no partial result left anywhere under the run
        assert not any("results.json" in files for _, _, files in os.walk(run.dir))


def test_offline_selftest_passes(workdir):
    assert selftest("omnibio_docker", str(workdir)) == []


def test_docker_backend_needs_no_cloud_sdk(workdir):
    """miniwdl imports every registered backend: without boto3, the Azure SDK and py-tes,
    omnibio_docker still runs and a cloud backend says which extra to install."""
    blocked = workdir / "blocked"
    for module in ("boto3", "botocore", "azure", "tes"):
        (blocked / module).mkdir(parents=True)
        (blocked / module / "__init__.py").write_text(
            f'raise ImportError("No module named {module}")\n'
        )
    env = {"PYTHONPATH": str(blocked)}
    assert _run(workdir, env=env).returncode == 0
    run = _run(workdir, env=env, config={"scheduler": {"container_backend": "omnibio_awsbatch"}})
    assert run.returncode != 0
    assert "install it with pip install 'miniwdl-omnibio[aws]'" in error_line(run)
