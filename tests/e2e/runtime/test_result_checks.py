"""Result verification through miniwdl on omnibio_docker: a results.json from another attempt,
and ``warn`` / ``off`` set in the config or in the task's runtime section."""

import pytest

from tests.helpers import run_miniwdl

WDL = """
version 1.1
task stale {
  command <<<
    python3 -c 'import json, os
from miniwdl_omnibio.runtime import upload_result
upload_result(os.environ["RESULT_URI"], json.dumps({"ok": True, "run_id": "another.run.1"}).encode())'
  >>>
  runtime { container: "omnibio/runtime:latest" ~{CHECK} }
}
"""
PROBLEM = "is from run another.run.1, not"


def _run(workdir, config_check=None, runtime_check=None):
    wdl = workdir / "stale.wdl"
    check = f'omnibio_result_check: "{runtime_check}"' if runtime_check else ""
    wdl.write_text(WDL.replace("~{CHECK}", check))
    omnibio = {"result_uri_prefix": f"file://{workdir}/results"}
    if config_check:
        omnibio["result_check"] = config_check
    return run_miniwdl(str(wdl), [], str(workdir), config={"omnibio": omnibio})


def test_another_attempts_result_fails_the_task(docker_rig, workdir):
    run = _run(workdir)
    assert run.returncode != 0
    assert PROBLEM in run.error_json().get("cause", {}).get("message", "") or PROBLEM in run.stderr


@pytest.mark.parametrize(
    "config_check,runtime_check,warned",
    [("warn", None, True), (None, "warn", True), ("off", None, False), ("fail", "off", False)],
)
def test_warn_and_off(docker_rig, workdir, config_check, runtime_check, warned):
    run = _run(workdir, config_check, runtime_check)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (PROBLEM in run.stderr) is warned
