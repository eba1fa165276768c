"""[omnibio_docker] pull (missing | always | never) and the image log line (id and digest), with
a registry on 127.0.0.1 (registry.py) that counts what dockerd asks it."""

import contextlib
import re

import docker
import pytest

from miniwdl_omnibio.engines.docker.engine import PULL_TRIES
from tests.e2e.docker import registry
from tests.e2e.docker.support import Lines
from tests.helpers import (
    DEADLINE,
    containers_with_label,
    error_line,
    popen_miniwdl,
    run_miniwdl,
    wait_until,
    workflow_run_of,
)

pytestmark = pytest.mark.usefixtures("docker_rig")

TASK = """
version 1.1
task t {{
  command <<< echo ran >>>
  output {{ String said = read_string(stdout()) }}
  runtime {{ docker: "{image}" }}
}}
"""
# two tasks of one run on one image: the image is pulled once per run, not per task
TWICE = """
version 1.1
workflow twice {{
  scatter (i in range(2)) {{ call t }}
}}
""" + TASK.replace("version 1.1", "")


@pytest.fixture(scope="module")
def served():
    """The registry, serving omnibio/tiny:1; yields (registry, image ref, image id, digest)."""
    layer, base = registry.tiny_layer()
    with registry.serve() as reg:
        image_id, digest = reg.add_image("omnibio/tiny", "1", layer, base)
        ref = f"{reg.host}/omnibio/tiny:1"
        yield reg, ref, image_id, f"{reg.host}/omnibio/tiny@{digest}"
        _remove(ref)


@pytest.fixture(scope="module")
def one_pull(served) -> dict[str, int]:
    """The manifest requests of one `docker pull` of the served image by this dockerd, when the
    image is absent and when it is present (here HEAD then GET, and HEAD alone): the unit of the
    exact counts below."""
    reg, ref, _image_id, _digest = served
    _remove(ref)
    counts = {}
    for state in ("absent", "present"):
        asked = reg.manifest_requests("omnibio/tiny")
        docker.from_env().images.pull(ref)
        counts[state] = reg.manifest_requests("omnibio/tiny") - asked
    _remove(ref)
    assert counts["absent"] > 0 and counts["present"] > 0, counts
    return counts


def _remove(ref: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker.from_env().images.remove(ref)


def _run(workdir, image: str, pull: str | None = None, wdl_text: str = TASK):
    wdl = workdir / "t.wdl"
    wdl.write_text(wdl_text.format(image=image))
    config = {"omnibio_docker": {"pull": pull}} if pull else None
    return run_miniwdl(str(wdl), [], str(workdir), config=config)


def _image_line(run) -> str:
    (line,) = [x for x in run.stderr.splitlines() if "docker image ::" in x]
    return line


def _no_leftovers(run) -> None:
    assert containers_with_label("omnibio.run", workflow_run_of(run.dir)) == []


def test_missing_pulls_an_absent_image_once_and_logs_its_id_and_digest(workdir, served, one_pull):
    reg, ref, image_id, digest = served
    _remove(ref)
    asked = reg.manifest_requests("omnibio/tiny")
    run = _run(workdir, ref, wdl_text=TWICE)  # the default policy: missing
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["twice.t.said"] == ["ran", "ran"]
    # pulled once for two tasks
    assert reg.manifest_requests("omnibio/tiny") - asked == one_pull["absent"]
    assert f'tag: "{ref}", id: "{image_id}", digest: "{digest}"' in _image_line(run)
    asked = reg.manifest_requests("omnibio/tiny")
    (workdir / "again").mkdir()
    again = _run(workdir / "again", ref)
    assert again.returncode == 0, again.stderr[-3000:]
    assert reg.manifest_requests("omnibio/tiny") == asked  # present now: not asked again


# one task on an image to pull, and beside it, one at a time, four on an image here
PULL_BESIDE_LOCAL = """
version 1.1
workflow beside {{
  call t as pulled {{ input: image = "{image}" }}
  scatter (i in range(4)) {{ call t as here {{ input: image = "ubuntu:22.04" }} }}
}}
task t {{
  input {{ String image }}
  command <<< echo ran >>>
  output {{ String said = read_string(stdout()) }}
  runtime {{ docker: image  cpu: 1 }}
}}
"""


def test_a_slow_pull_holds_back_no_task_on_another_image(workdir, served):
    """While one task's image is pulled (the registry answers each blob after 8 s), the tasks on
    an image here run and end in the other slot: a pull holds back only its own image's tasks."""
    reg, ref, _image_id, _digest = served
    run = _pull_while(workdir, reg, ref, PULL_BESIDE_LOCAL, blob_delay=8.0)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["beside.here.said"] == ["ran"] * 4
    pull_started = _log_times(run, rf'NOTICE docker pull :: image: "{re.escape(ref)}"')[0]
    pulled = _log_times(run, rf'NOTICE docker image :: tag: "{re.escape(ref)}"')[0]
    here_done = _log_times(run, r"t:call-here-\d+ NOTICE done")
    assert len(here_done) == 4 and max(here_done) < pulled, (pull_started, here_done, pulled)
    assert sum(pull_started < done for done in here_done) >= 2, (pull_started, here_done)


def _pull_while(workdir, reg: registry.Registry, ref: str, wdl_text: str, **misbehaving):
    """Run ``wdl_text`` on ``ref``, absent here, while the registry misbehaves as set (e.g.
    ``unavailable=2``); the registry behaves again afterwards."""
    _remove(ref)
    normal = {name: getattr(reg, name) for name in misbehaving}
    vars(reg).update(misbehaving)
    try:
        return _run(workdir, ref, wdl_text=wdl_text)
    finally:
        vars(reg).update(normal)


def _log_times(run, pattern: str) -> list[str]:
    """The timestamps of the log lines matching ``pattern``, as text (it sorts as time)."""
    return [line[:23] for line in run.stderr.splitlines() if re.search(pattern, line)]


def test_a_registry_hiccup_is_pulled_again(workdir, served):
    """The registry answers 503 to the first pull's manifest requests (HEAD, then GET): dockerd
    fails that pull at once, the engine pulls again after a pause and the task runs."""
    reg, ref, image_id, _digest = served
    run = _pull_while(workdir, reg, ref, TASK, unavailable=2)
    assert run.returncode == 0, run.stderr[-3000:]
    (warning,) = [line for line in run.stderr.splitlines() if "docker pull failed" in line]
    assert "503 Service Unavailable" in warning, warning
    assert f'id: "{image_id}"' in _image_line(run)


def test_a_registry_that_stays_unavailable_fails_in_one_line_after_three_pulls(workdir, served):
    reg, ref, _image_id, _digest = served
    run = _pull_while(workdir, reg, ref, TASK, unavailable=1000)
    assert run.returncode != 0
    line = error_line(run)
    expected = f"docker image {ref} is not on this host and could not be pulled: "
    assert line.startswith(expected) and "503 Service Unavailable" in line, line
    assert "\n" not in line and "Traceback" not in line
    assert run.stderr.count("docker pull failed") == PULL_TRIES
    _no_leftovers(run)


# ubuntu first (it holds the run's network sandbox, so the image to prune is not in use), the
# image to prune, a task waiting for the test's "go" file, the image to prune again
PRUNED = """
version 1.2
workflow pruned {{
  input {{ Directory control }}
  call t as warm {{ input: image = "ubuntu:22.04" }}
  call t as first {{ input: image = "{image}", after = warm.said }}
  call t as hold {{ input: image = "ubuntu:22.04", after = first.said, control }}
  call t as second {{ input: image = "{image}", after = hold.said }}
}}
task t {{
  input {{
    String image
    String after = ""
    Directory? control
  }}
  command <<<
    if [ -n "~{{control}}" ]; then
      for _ in $(seq 3000); do [ -e "~{{control}}/go" ] && break; sleep 0.2; done
    fi
    echo ran
  >>>
  output {{ String said = read_string(stdout()) }}
  requirements {{ container: image }}
}}
"""


def test_an_image_removed_between_two_tasks_is_resolved_anew(workdir, served):
    """docker image prune -a while a run goes on: the next task on that image finds it gone from
    the host, and the engine pulls it again instead of failing on the id it had resolved."""
    reg, ref, image_id, _digest = served
    _remove(ref)
    wdl = workdir / "w.wdl"
    wdl.write_text(PRUNED.format(image=ref))
    control = workdir / "control"
    control.mkdir()
    proc = popen_miniwdl(str(wdl), [f"control={control}"], str(workdir))
    lines = Lines(proc.stderr)
    try:
        lines.wait_for("t:call-hold INFO docker container ::")
        # the first task's container is removed in the background: then nothing uses the image
        wait_until(lambda: _removed(ref), f"{ref} removed from the host")
    finally:
        (control / "go").touch()
        proc.wait(timeout=DEADLINE)
    text = lines.text()
    assert proc.returncode == 0, text[-3000:]
    assert "t:call-second WARNING docker image gone from this host" in text
    assert text.count(f'NOTICE docker pull :: image: "{ref}"') == 2
    assert docker.from_env().images.get(ref).id == image_id


def _removed(ref: str) -> bool:
    """``_remove``, False while a container still uses the image."""
    try:
        _remove(ref)
    except docker.errors.APIError:
        return False
    return True


def test_always_pulls_an_image_already_here_once_per_run(workdir, served, one_pull):
    reg, ref, image_id, digest = served
    docker.from_env().images.pull(ref)
    asked = reg.manifest_requests("omnibio/tiny")
    run = _run(workdir, ref, pull="always", wdl_text=TWICE)
    assert run.returncode == 0, run.stderr[-3000:]
    assert reg.manifest_requests("omnibio/tiny") - asked == one_pull["present"]
    assert f'tag: "{ref}", id: "{image_id}", digest: "{digest}"' in _image_line(run)


def _always_on_a_local_copy(workdir, local: str) -> str:
    """Run ``local`` (a tag of an image here) under pull = always: it must fail, not fall back to
    the local image, in one line; returns that line."""
    docker.from_env().images.get("ubuntu:22.04").tag(local)
    try:
        run = _run(workdir, local, pull="always")
    finally:
        _remove(local)
    assert run.returncode != 0
    line = error_line(run)
    prefix = f"docker image {local} could not be pulled ([omnibio_docker] pull = always): "
    assert line.startswith(prefix) and "\n" not in line and "Traceback" not in line, line
    _no_leftovers(run)
    return line


def test_always_with_a_failing_pull_is_one_line(workdir, served, one_pull):
    """The image is here, but under pull = always the registry's "manifest unknown" wins."""
    reg, _ref, _image_id, _digest = served
    line = _always_on_a_local_copy(workdir, f"{reg.host}/omnibio/not-served:1")
    assert "manifest unknown" in line, line  # the registry's reason
    # one pull: dockerd itself asked the registry twice for the missing manifest once in CI
    # (under load), so up to two of its requests, never the engine's pull again
    assert 1 <= reg.manifest_requests("omnibio/not-served") <= 2 * one_pull["absent"]


def test_always_with_no_registry_answering_is_one_line(workdir):
    """An offline host: nothing listens on port 1, so the pull is refused at once."""
    line = _always_on_a_local_copy(workdir, "127.0.0.1:1/omnibio/offline:1")
    assert "connection refused" in line, line


def test_a_pull_failing_midway_is_one_line_with_the_daemon_reason(workdir, served):
    """dockerd reports a layer it cannot unpack inside the pull's progress stream, after HTTP
    200: that reason must reach the line, not a later "no such image"."""
    reg, _ref, _image_id, _digest = served
    base = docker.from_env().images.get("omnibio/base:bookworm").attrs
    reg.add_image("omnibio/broken", "1", b"this is not a tar archive", base)
    broken = f"{reg.host}/omnibio/broken:1"
    run = _run(workdir, broken)
    assert run.returncode != 0
    line = error_line(run)
    assert line.startswith(f"docker image {broken} is not on this host and could not be pulled")
    assert "No such image" not in line and "layer" in line, line
    assert "\n" not in line and "Traceback" not in line
    _no_leftovers(run)


def test_never_with_an_absent_image_is_one_line_and_asks_no_registry(workdir, served):
    reg, ref, _image_id, _digest = served
    _remove(ref)
    asked = len(reg.requests)
    run = _run(workdir, ref, pull="never")
    assert run.returncode != 0
    line = error_line(run)
    assert line == f"docker image {ref} is not on this host and [omnibio_docker] pull = never", line
    assert len(reg.requests) == asked
    _no_leftovers(run)


def test_a_local_image_is_logged_with_its_id(workdir):
    run = _run(workdir, "ubuntu:22.04", pull="never")
    assert run.returncode == 0, run.stderr[-3000:]
    image_id = docker.from_env().images.get("ubuntu:22.04").id
    # built here, never pulled: no registry digest to log
    assert re.search(rf'tag: "ubuntu:22.04", id: "{image_id}", digest: null', _image_line(run))
