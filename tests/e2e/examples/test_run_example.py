"""The README's first command, `bash examples/run-example.sh`, in a fresh copy of this checkout:
first with nothing installed (no active virtual environment: it creates .venv in the clone,
without system site packages, and installs the package and its dependencies there through pip
as this machine configures it), then again with that .venv active (already installed: it only
runs the example, in seconds).

It never runs against the environment running pytest: the script would install this checkout
into it when another checkout is installed there."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.helpers import REPO, workflow_run_of

pytestmark = pytest.mark.usefixtures("docker_rig")


def _fresh_clone(where: str) -> str:
    """The checkout's files (tracked and new, not ignored) as a fresh clone has them: no .venv,
    no runs, no results."""
    clone = os.path.join(where, "clone")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = os.path.join(REPO, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(clone, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(clone, name))
    return clone


def _environment(**extra: str) -> dict[str, str]:
    """This machine's environment without Python, miniwdl or virtual-environment settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MINIWDL", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    return {**env, **extra}


def _run(clone: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = os.path.join(clone, "examples", "run-example.sh")
    return subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """(clone, the first command's process) with nothing installed."""
    where = tmp_path_factory.mktemp("first-command")
    clone = _fresh_clone(str(where))
    yield clone, _run(clone, _environment())
    shutil.rmtree(where, ignore_errors=True)


def _check_results(clone: str, proc: subprocess.CompletedProcess) -> None:
    """Each verified result printed with its path, under the clone's example directory."""
    example = os.path.join(clone, "examples", "quickstart")
    run_dir = re.search(r"^run directory: (.+)$", proc.stdout, re.M).group(1)
    assert os.path.dirname(run_dir) == os.path.join(example, "runs")
    uploads = re.findall(r"^  at (.+/results\.json)$", proc.stdout, re.M)
    assert len(uploads) == 2
    for path in uploads:
        assert path.startswith(os.path.join(example, "results", workflow_run_of(run_dir)))
        with open(path) as infile:
            document = json.load(infile)
        assert document["ok"] is True
        assert json.dumps(document["results"]) in proc.stdout
    assert "Hello, Ben Bitdiddle!" in proc.stdout


def test_with_nothing_installed_it_installs_into_the_clone_venv_and_runs(first_run):
    clone, proc = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    venv = os.path.join(clone, ".venv")
    assert f"package: installing this checkout into {venv} (no virtual environment" in proc.stderr
    with open(os.path.join(venv, "pyvenv.cfg")) as infile:
        assert "include-system-site-packages = false" in infile.read()
    probe = "import miniwdl_omnibio as m; print(m.__file__)"
    python = os.path.join(venv, "bin", "python")
    installed = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True)
    assert installed.stdout.strip() == os.path.join(clone, "miniwdl_omnibio", "__init__.py")
    _check_results(clone, proc)


def test_a_second_run_in_the_active_venv_only_runs_the_example(first_run):
    clone, proc = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    venv = os.path.join(clone, ".venv")
    started = time.monotonic()
    again = _run(clone, _environment(VIRTUAL_ENV=venv))
    took = time.monotonic() - started
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"package: already installed in the active virtual environment {venv}" in again.stderr
    _check_results(clone, again)
    assert took < 60, f"the second run took {took:.0f} s"  # README: seconds (generous, loaded host)
