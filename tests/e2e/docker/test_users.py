"""Output ownership when miniwdl runs as a real user who is not root (created by the test, with
access to the Docker socket through its group): with --as-me the command runs as that user;
without it the image's root writes, and the outputs are chowned back to the user (docs/docker.md).
Under root both would pass trivially (uid 0 = 0)."""

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import omni_tool_runtime
import pytest

import miniwdl_omnibio
from tests.conftest import require
from tests.helpers import miniwdl_env

pytestmark = pytest.mark.usefixtures("docker_rig")

SOCKET = "/var/run/docker.sock"
WDL = """
version 1.1
task write {
  command <<<
    id -u
    mkdir -p made/deeper
    echo written > made/deeper/file.txt
  >>>
  output {
    Int uid = read_int(stdout())
    File made = "made/deeper/file.txt"
  }
  runtime { docker: "ubuntu:22.04" }
}
"""
# In a private mount namespace, make the Python installation searchable for the user when it
# sits under a directory only root may enter (e.g. /root/.pyenv): a tmpfs over that directory
# holding just the installation. Nothing changes outside this one process tree.
EXPOSE = (
    'set -e; keep=$(mktemp -d); mount --bind "$1" "$keep"; '
    'mount -t tmpfs -o mode=0755 omnibio-test "$2"; mkdir -p "$1"; mount --move "$keep" "$1"; '
    'shift 2; exec "$@"'
)


@pytest.fixture(scope="module")
def user():
    require(
        os.geteuid() == 0 and all(shutil.which(t) for t in ("useradd", "setpriv", "unshare")),
        "the ownership tests create a user: they need root, useradd, setpriv and unshare",
    )
    socket_group = os.stat(SOCKET).st_gid
    require(socket_group != 0, f"{SOCKET} has no group other than root to give a user")
    name = f"omnibio-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", name], check=True)
    try:
        group = grp.getgrgid(socket_group).gr_name
        subprocess.run(["usermod", "--append", "--groups", group, name], check=True)
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


@pytest.fixture(scope="module")
def code():
    """The code under test, copied where any user may read it: the checkout may sit under a
    directory only its owner can enter (a clone in a mode-0700 temporary directory), and the
    user's miniwdl must import this code, not whatever else is installed. Returns the copy's
    root, for PYTHONPATH."""
    root = tempfile.mkdtemp(prefix="omnibio-user-code-")
    os.chmod(root, 0o755)
    skip = shutil.ignore_patterns("__pycache__")
    for package in (miniwdl_omnibio, omni_tool_runtime):
        source = os.path.dirname(os.path.abspath(package.__file__))
        shutil.copytree(source, os.path.join(root, os.path.basename(source)), ignore=skip)
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chmod(os.path.join(current, name), 0o755 if name in dirs else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def home(user):
    """A run directory the user owns (pytest's own tmp directories are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="omnibio-user-"))
    os.chown(path, user.pw_uid, user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _hidden_ancestor(path: str) -> str | None:
    """The outermost directory above ``path`` that others may not enter, if any."""
    parts = Path(path).parts
    for depth in range(2, len(parts) + 1):
        ancestor = os.path.join(*parts[:depth])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _as_user(user, home: Path, code: str, python_args: list[str]) -> subprocess.CompletedProcess:
    """Python, run as ``user`` in ``home``, importing the code under test from ``code``."""
    argv = [sys.executable, *python_args]
    argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *argv]
    hidden = _hidden_ancestor(sys.base_prefix)
    if hidden:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", EXPOSE, "sh"] + [
            sys.base_prefix,
            hidden,
            *argv,
        ]
    env = {**miniwdl_env("omnibio_docker"), "HOME": str(home), "PYTHONPATH": code}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(argv, env=env, cwd=home, capture_output=True, text=True, timeout=300)


def _run_as(user, home: Path, code: str, *extra: str) -> dict:
    wdl = home / "write.wdl"
    wdl.write_text(WDL)
    os.chown(wdl, user.pw_uid, user.pw_gid)
    proc = _as_user(user, home, code, ["-m", "WDL", "run", str(wdl), "--dir", str(home), *extra])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_the_user_runs_the_code_under_test_wherever_the_checkout_is(user, home, code):
    """Not a copy installed elsewhere, and not the checkout itself (the user may not read it)."""
    probe = "import miniwdl_omnibio, omni_tool_runtime as o; print(miniwdl_omnibio.__file__, o.__file__)"
    proc = _as_user(user, home, code, ["-c", probe])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [
        os.path.join(code, "miniwdl_omnibio", "__init__.py"),
        os.path.join(code, "omni_tool_runtime", "__init__.py"),
    ]


def _owners(directory: Path) -> set[tuple[int, int]]:
    """(uid, gid) of everything under ``directory``."""
    found = set()
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            stat = os.lstat(os.path.join(root, name))
            found.add((stat.st_uid, stat.st_gid))
    return found


def test_as_me_runs_the_command_as_the_invoking_user(user, home, code):
    run = _run_as(user, home, code, "--as-me")
    assert run["outputs"]["write.uid"] == user.pw_uid
    made = Path(run["outputs"]["write.made"]).resolve()
    assert (made.stat().st_uid, made.stat().st_gid) == (user.pw_uid, user.pw_gid)
    assert _owners(Path(run["dir"])) == {(user.pw_uid, user.pw_gid)}


def test_outputs_are_chowned_back_to_a_user_who_is_not_root(user, home, code):
    run = _run_as(user, home, code)
    assert run["outputs"]["write.uid"] == 0  # the image's root wrote them ...
    made = Path(run["outputs"]["write.made"]).resolve()
    assert (made.stat().st_uid, made.stat().st_gid) == (user.pw_uid, user.pw_gid)
    assert _owners(Path(run["dir"])) == {(user.pw_uid, user.pw_gid)}  # ... the user owns them
