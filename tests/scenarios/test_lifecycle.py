"""One behaviour per situation on every backend: the lifecycle's promises, run for real on each
backend's rig (dockerd, moto server, the Azure Batch emulator, the TES server).

What only one engine has (preemption injection, OOM where the service reports it, its own bad
configuration) stays in tests/e2e/<engine>/.
"""

import json
import os
import re
import signal
import time
from datetime import datetime

import pytest

from tests.conformance.test_conformance import BACKEND_FIXTURES
from tests.helpers import (
    miniwdl_env,
    popen_miniwdl,
    run_dir_name,
    run_miniwdl,
    wait_until,
    workflow_run_of,
)
from tests.scenarios.contract import check_contract, check_contract_form_clash
from tests.scenarios.probes import running, still_active

RUNTIME_IMAGE = "omnibio/runtime:latest"
# moto does not enforce attemptDurationSeconds: tests/e2e/awsbatch covers AWS time limits
# through a proxy that answers as Batch does at the limit
SERVICE_ENFORCES_NO_LIMIT_HERE = {"omnibio_awsbatch"}


def _rig(request, backend):
    env, run_root = request.getfixturevalue(BACKEND_FIXTURES[backend])
    where = os.path.join(run_root, "scenarios", f"{request.node.name[:60]}-{time.time_ns()}")
    os.makedirs(where)
    os.chmod(where, 0o755)
    # no wait before a retry: only the retry scenario, which measures the wait, sets one
    env = {**env, "MINIWDL__OMNIBIO__RETRY_WAIT": "0"}
    if not env.get("MINIWDL__OMNIBIO__RESULT_URI_PREFIX"):
        env["MINIWDL__OMNIBIO__RESULT_URI_PREFIX"] = f"file://{where}/results"
    return backend, env, where


@pytest.fixture(params=sorted(BACKEND_FIXTURES))
def rig(request):
    """(backend, env, run directory) for one scenario on one backend."""
    return _rig(request, request.param)


@pytest.fixture(params=sorted(set(BACKEND_FIXTURES) - SERVICE_ENFORCES_NO_LIMIT_HERE))
def rig_with_time_limits(request):
    """rig, on the backends whose rig enforces a time limit."""
    return _rig(request, request.param)


def _wdl(where: str, name: str, text: str) -> str:
    path = os.path.join(where, name)
    with open(path, "w") as outfile:
        outfile.write(text)
    return path


def _error(run) -> str:
    return json.dumps(run.error_json())


def _log(run) -> str:
    """Every log file of the run."""
    text = []
    for current, _dirs, files in os.walk(run.dir):
        for name in sorted(f for f in files if f.endswith(".log")):
            with open(os.path.join(current, name), errors="replace") as infile:
                text.append(infile.read())
    return "\n".join(text)


def _running_tasks(run_dir: str, count: int):
    """True once ``count`` tasks wrote their 'started' marker (the command is running)."""

    def check():
        found = 0
        for _current, _dirs, files in os.walk(run_dir):
            found += "started" in files
        return found >= count

    return check


SLEEPERS = """
version 1.1
workflow sleepers {
  scatter (i in [1, 2]) {
    call nap { input: i }
  }
}
task nap {
  input { Int i }
  command <<< touch started; sleep 300 >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 omnibio_result_check: "off" }
}
"""


def test_sigint_cancels_everything_the_run_started(rig):
    backend, env, where = rig
    proc = popen_miniwdl(_wdl(where, "sleepers.wdl", SLEEPERS), [], where, backend, env=env)
    try:
        directory = os.path.join(where, run_dir_name(where))
        run = workflow_run_of(directory)
        markers = _running_tasks(directory, 2)
        wait_until(lambda: markers() or running(backend, env, run) >= 2, "2 tasks run")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert proc.returncode != 0
        left = wait_until(lambda: not still_active(backend, env, run) or None, "nothing active", 60)
        assert left
    finally:
        if proc.poll() is None:
            proc.kill()


FAIL_FAST = """
version 1.1
workflow ff {
  call nap
  call boom
}
task nap {
  command <<< touch started; sleep 300 >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 omnibio_result_check: "off" }
}
task boom {
  command <<<
    for _ in $(seq %d); do [ -e go ] && break; sleep 0.2; done
    exit 3
  >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 omnibio_result_check: "off" }
}
"""
# where a task's work directory is this host's (every rig but TES staging), boom fails once
# the test, having seen nap run, creates ``go`` in it; under staging it fails after 20 s (nap
# must be seen running before that)
STAGED_WORK_DIRS = {"omnibio_tes"}


def test_fail_fast_stops_the_other_tasks(rig):
    """nap is seen running (its marker, or the service), then boom fails: miniwdl's fail_fast
    must cancel nap (which would sleep 300 s) and the service must list nothing of the run."""
    backend, env, where = rig
    gated = backend not in STAGED_WORK_DIRS
    wdl = _wdl(where, "ff.wdl", FAIL_FAST % (1500 if gated else 100))
    proc = popen_miniwdl(wdl, [], where, backend, env=env)
    try:
        directory = os.path.join(where, run_dir_name(where))
        run = workflow_run_of(directory)
        nap = _running_tasks(os.path.join(directory, "call-nap"), 1)
        # under staging the service's RUNNING count: both nap and boom
        wait_until(lambda: nap() or running(backend, env, run) >= 2, "nap to run")
        assert still_active(backend, env, run), "the service lists nap while it runs"
        if gated:
            boom_work = os.path.join(directory, "call-boom", "work")
            wait_until(lambda: os.path.isdir(boom_work), "boom's work directory")
            with open(os.path.join(boom_work, "go"), "w"):
                pass
        proc.wait(timeout=120)  # nap alone would take 300 s
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    error = json.dumps(_error_of(directory))
    assert '"exit_code": 3' in error or "exit status 3" in error, error
    with open(os.path.join(directory, "call-nap", "task.log")) as infile:
        assert "cancelling" in infile.read()  # stopped by the plugin, not ended by itself
    wait_until(lambda: not still_active(backend, env, run), "nothing active", 60)


def _error_of(run_dir: str) -> dict:
    path = os.path.join(run_dir, "error.json")
    if not os.path.exists(path):
        return {}
    with open(path) as infile:
        return json.load(infile)


TIME_LIMIT = """
version 1.1
task slow {
  command <<< sleep 300 >>>
  runtime { docker: "ubuntu:22.04" omnibio_time_limit: "3s" omnibio_result_check: "off" }
}
"""


def _log_time(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")


def _check_stopped_at_the_limit(backend: str, env: dict[str, str], run, limit: float) -> None:
    """The attempt ran at least ``limit`` seconds (less one poll: the tracker may see it running
    one poll late) before the limit ended it, and the service lists nothing of the run after."""
    lines = _log(run).splitlines()
    started = next(x for x in lines if re.search(r'engine status :: .*phase: "running"', x))
    stopped = next(x for x in lines if "task exceeded its time limit" in x)
    section = f"MINIWDL__{backend.upper()}__POLL_SECONDS"
    poll = float(env.get(section) or 1.0)
    ran = (_log_time(stopped) - _log_time(started)).total_seconds()
    assert ran >= limit - poll, f"stopped after {ran} s, limit {limit} s, poll {poll} s"
    name = workflow_run_of(run.dir)
    wait_until(lambda: not still_active(backend, env, name), "nothing active", 60)


def test_time_limit_is_one_line_naming_it(rig_with_time_limits):
    backend, env, where = rig_with_time_limits
    run = run_miniwdl(_wdl(where, "slow.wdl", TIME_LIMIT), [], where, backend, env=env, timeout=240)
    assert run.returncode != 0  # within 240 s: the task alone sleeps 300 s
    assert re.search(
        r"exceeded its time limit of 3 s \(runtime.omnibio_time_limit\)", _error(run)
    ), _error(run)
    _check_stopped_at_the_limit(backend, env, run, 3)


DEFAULT_LIMIT = """
version 1.1
task slow_by_default {
  command <<< sleep 300 >>>
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""


def test_default_time_limit_applies_when_the_task_sets_none(rig_with_time_limits):
    backend, env, where = rig_with_time_limits
    env = {**env, f"MINIWDL__{backend.upper()}__DEFAULT_TIME_LIMIT": "3"}
    wdl = _wdl(where, "slow.wdl", DEFAULT_LIMIT)
    run = run_miniwdl(wdl, [], where, backend, env=env, timeout=240)
    assert run.returncode != 0
    expected = rf"exceeded its time limit of 3 s \(\[{backend}\] default_time_limit\)"
    assert re.search(expected, _error(run)), _error(run)
    _check_stopped_at_the_limit(backend, env, run, 3)


MISSING_IMAGE = """
version 1.1
task ghost {
  command <<< true >>>
  runtime { docker: "omnibio/no-such-image:404" omnibio_result_check: "off" }
}
"""


def test_missing_image_is_named(rig):
    backend, env, where = rig
    wdl = _wdl(where, "ghost.wdl", MISSING_IMAGE)
    run = run_miniwdl(wdl, [], where, backend, env=env, timeout=240)
    assert run.returncode != 0
    assert "omnibio/no-such-image:404" in _error(run), _error(run)
    wait_until(
        lambda: not still_active(backend, env, workflow_run_of(run.dir)), "nothing active", 60
    )


RESULTS = f"""
version 1.1
task tool {{
  input {{ String document }}
  command <<<
    set -e
    if [ -n '~{{document}}' ]; then
      echo '~{{document}}' > r.json
      python3 -m miniwdl_omnibio.runtime upload r.json
    fi
  >>>
  runtime {{ docker: "{RUNTIME_IMAGE}" }}
}}
"""


@pytest.mark.parametrize(
    "document,expected",
    [
        ("", "results.json missing"),
        (
            '{"ok": false, "error": "reference genome missing"}',
            "says ok=false: reference genome missing",
        ),
    ],
    ids=["missing", "ok_false"],
)
def test_results_json_problems_fail_saying_which(rig, document, expected):
    backend, env, where = rig
    wdl = _wdl(where, "tool.wdl", RESULTS)
    run = run_miniwdl(wdl, [f"document={document}"], where, backend, env=env, timeout=240)
    assert run.returncode != 0 and expected in _error(run), _error(run)


def test_a_verified_result_is_given_to_the_outputs(rig):
    backend, env, where = rig
    wdl = _wdl(where, "tool.wdl", RESULTS)
    document = '{"results": {"answer": 42}}'
    run = run_miniwdl(wdl, [f"document={document}"], where, backend, env=env, timeout=240)
    assert run.returncode == 0, _error(run)
    with open(os.path.join(run.dir, "work", "omnibio_result.json")) as infile:
        verified = json.load(infile)
    assert verified["ok"] is True and verified["results"] == {"answer": 42}


RETRY = f"""
version 1.2
task flaky {{
  command <<<
    set -e
    if [ ~{{task.attempt}} -eq 0 ]; then
      echo '{{"results": {{"attempt": 1}}}}' > r.json
      python3 -m miniwdl_omnibio.runtime upload r.json
      exit 1
    fi
  >>>
  runtime {{ container: "{RUNTIME_IMAGE}" maxRetries: 1 }}
}}
"""


def test_a_retry_waits_first_and_sees_no_stale_result(rig):
    """The first attempt uploads a valid results.json and fails; the retry, after its wait,
    uploads none. The run must fail for the missing result: the first attempt's file, still
    where the retry's goes, was removed before the retry (not refused later for its run_id).
    The wait is measured: from the first attempt's exit, as the plugin saw it, to the second
    attempt's start."""
    backend, env, where = rig
    env = {**env, "MINIWDL__OMNIBIO__RETRY_WAIT": "2"}
    run = run_miniwdl(_wdl(where, "flaky.wdl", RETRY), [], where, backend, env=env, timeout=240)
    assert run.returncode != 0 and "results.json missing" in _error(run), _error(run)
    lines = _log(run).splitlines()
    exited = next(i for i, x in enumerate(lines) if re.search(r"task exit :: .*exit_code: 1\b", x))
    second = next(x for x in lines[exited:] if "omnibio attempt ::" in x)
    waited = (_log_time(second) - _log_time(lines[exited])).total_seconds()
    assert waited >= 2, f"the retry started {waited} s after the failed attempt"


# the engines whose rig here reports a container killed at its memory limit (moto_batch gives a
# job its MEMORY as a hard limit; Azure's job script records the cgroup's OOM kill); TES reports
# no OOM at all (the task ends with exit code 137)
OOM_TOLD_HERE = ("omnibio_docker", "omnibio_slurm", "omnibio_awsbatch", "omnibio_azurebatch")
OOM = """
version 1.1
task hungry {
  command <<< python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))' >>>
  runtime { docker: "omnibio/runtime:latest" memory: "64 MiB" omnibio_result_check: "off" }
}
"""


@pytest.fixture(params=OOM_TOLD_HERE)
def rig_telling_oom(request):
    """rig, on the backends whose rig reports an out-of-memory kill."""
    return _rig(request, request.param)


def test_out_of_memory_is_named(rig_telling_oom):
    backend, env, where = rig_telling_oom
    # miniwdl's rule on omnibio_docker: runtime.memory is a hard limit only under the multiplier
    env = {**env, "MINIWDL__TASK_RUNTIME__MEMORY_LIMIT_MULTIPLIER": "1.0"}
    run = run_miniwdl(_wdl(where, "oom.wdl", OOM), [], where, backend, env=env, timeout=240)
    assert run.returncode != 0
    assert "killed for exceeding the memory limit (67108864 bytes)" in _error(run), _error(run)


DISKS = """
version 1.1
task any_disks {
  command <<< echo ok >>>
  output { String said = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" disks: "ignored" omnibio_result_check: "off" }
}
"""


def test_unenforced_disks_value_warns_and_runs(rig):
    backend, env, where = rig
    run = run_miniwdl(_wdl(where, "disks.wdl", DISKS), [], where, backend, env=env, timeout=240)
    assert run.returncode == 0, _error(run)
    assert 'runtime.disks = "ignored" is not enforced' in _log(run)


def test_offline_selftest_passes(rig):
    from miniwdl_omnibio.cli.selftest import run as selftest

    backend, env, where = rig
    assert selftest(backend, where, env=miniwdl_env(backend, env=env)) == []


def test_the_contract_as_a_task_sees_it(rig):
    backend, env, where = rig
    check_contract(backend, env, where)


def test_the_contract_wins_a_name_clash_in_either_form(rig):
    backend, env, where = rig
    check_contract_form_clash(backend, env, where)
