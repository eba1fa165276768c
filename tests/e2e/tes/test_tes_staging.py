"""omnibio_tes end to end in staging mode: real miniwdl runs against the test TES server, which
downloads inputs from and uploads outputs to moto S3 and mounts nothing from this host."""

import json
import logging
import os

import requests
from WDL.runtime.cache import CallCache
from WDL.runtime.config import Loader

from miniwdl_omnibio.engines.tes.staging import CONTENT_MAX_BYTES
from tests.e2e.tes.runs import (
    env_for,
    logs_of,
    read,
    run,
    run_tasks,
    staged_keys,
    write,
)
from tests.e2e.tes.support import BUCKET, tes_config
from tests.emulators.tes_server import S3Access, TesServer
from tests.helpers import error_line, workflow_run_of

SCATTER = r"""
version 1.2
workflow fan {
  input { File reference  Directory panel }
  scatter (i in range(3)) {
    call echo { input: i = i, reference = reference, panel = panel }
  }
  output { Array[File] results = echo.result  Array[String] seen = echo.seen  Array[Directory] made = echo.made }
}
task echo {
  input { Int i  File reference  Directory panel }
  command <<<
    set -e
    echo "$(cat '~{reference}') $(ls '~{panel}' | tr '\n' ' ')$(cat '~{panel}/sub/deep.txt')" > seen.txt
    mkdir -p made/nested && echo ~{i} > made/nested/i.txt
    python3 -m miniwdl_omnibio.runtime.echo_test >&2
  >>>
  output { File result = "omnibio_result.json"  String seen = read_string("seen.txt")  Directory made = "made" }
  runtime {
    docker: "omnibio/runtime:latest"
    cpu: 1
    memory: "256 MiB"
    omnibio_backend_parameters: {"SHM_SIZE": "64m"}
  }
}
"""


def test_scatter_staged_once_results_verified_and_polling_flat(tes_server, moto, s3, rundir):
    reference = write(rundir, "reference.txt", "ref")
    panel = os.path.join(rundir, "panel")
    os.makedirs(os.path.join(panel, "sub"))
    write(panel, "a.txt", "a")
    write(os.path.join(panel, "sub"), "deep.txt", "deep")
    requests.post(f"{tes_server.url}/_fixture/counters:reset", timeout=10).raise_for_status()
    results = os.path.join(rundir, "results")
    done = run(
        tes_server,
        moto,
        rundir,
        SCATTER,
        [f"reference={reference}", f"panel={panel}"],
        config=tes_config(tes_server.url, results, keep_staged="true", page_size="1"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    workflow_run = workflow_run_of(done.dir)
    assert done.outputs["fan.seen"] == ["ref a.txt sub deep"] * 3
    for i, made in enumerate(done.outputs["fan.made"]):  # a Directory output, downloaded
        assert read(os.path.join(made, "nested", "i.txt")) == f"{i}\n"
    verified = [json.loads(read(path)) for path in done.outputs["fan.results"]]
    assert sorted(r["run_id"] for r in verified) == [
        f"{workflow_run}.call-echo-{i}.1" for i in range(3)
    ]
    # the same File and Directory staged once for three tasks; the command went as content
    keys = [k for k in staged_keys(s3, BUCKET) if f"/{workflow_run}." in k]
    assert len([k for k in keys if "/files/" in k]) == 1, keys
    assert (
        len([k for k in keys if "/dirs/" in k]) == 2
        and len([k for k in keys if "/done/" in k]) == 1
    )
    assert [k for k in keys if "/attempts/" in k]  # kept too, with keep_staged
    tasks = run_tasks(tes_server, done.dir)
    assert len(tasks) == 3 and {t["state"] for t in tasks} == {"COMPLETE"}
    task = tasks[0]
    assert task["resources"]["backend_parameters"] == {"SHM_SIZE": "64m"}
    assert task["resources"]["cpu_cores"] == 1 and task["resources"]["ram_gb"] == 0.269
    kinds = {(i.get("type"), "content" in i) for i in task["inputs"]}
    assert kinds == {("FILE", False), ("DIRECTORY", False), ("FILE", True)}
    assert all(i["url"].startswith(f"s3://{BUCKET}/tes/") for i in task["inputs"] if "url" in i)
    assert {o["name"] for o in task["outputs"]} == {"stdout.txt", "stderr.txt", "work", "dir3"}
    counters = requests.get(f"{tes_server.url}/_fixture/counters", timeout=10).json()["counters"]
    # status from lists by state; a task is fetched alone once, in FULL view, when it ended
    assert counters.get("get:FULL") == 3 and counters.get("get:MINIMAL", 0) == 0, counters
    assert done.stderr.count("reaches the log only when the task has ended") == 1
    assert not tes_server.containers()
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})


PROBE = r"""
version 1.1
task probe {
  input { File data }
  command <<<
    echo overwrite >> '~{data}'
    cat '~{data}' > copy.txt
    echo going down >&2
    exit 3
  >>>
  output { String copy = read_string("copy.txt") }
  runtime { docker: "ubuntu:22.04" returnCodes: [0, 3] }
}
"""


def test_return_codes_inputs_are_copies_and_staged_objects_removed(tes_server, moto, s3, rundir):
    data = write(rundir, "data.txt", "precious\n")
    done = run(tes_server, moto, rundir, PROBE, [f"data={data}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.outputs["probe.copy"] == "precious\noverwrite"
    assert read(data) == "precious\n"  # the task changed its copy, not the input
    (task,) = run_tasks(tes_server, done.dir)
    assert task["state"] == "EXECUTOR_ERROR" and task["logs"][-1]["logs"][-1]["exit_code"] == 3
    assert "going down" in read(os.path.join(done.dir, "stderr.txt"))
    assert not [k for k in staged_keys(s3, BUCKET) if workflow_run_of(done.dir) in k]


BOOM = """
version 1.1
task boom {
  command <<< echo going down >&2; exit 7 >>>
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_nonzero_exit_fails_with_its_failure_info(tes_server, moto, rundir):
    done = run(tes_server, moto, rundir, BOOM)
    assert done.returncode != 0
    cause = done.error_json()["cause"]
    assert cause["error"] == "CommandFailed" and cause["exit_status"] == 7, cause
    assert cause["engine"] == "omnibio_tes" and cause["tes_state"] == "EXECUTOR_ERROR"
    assert "going down" in cause["tes_stderr_tail"]
    assert "going down" in read(cause["stderr_file"])


def test_on_tesk_a_failed_tasks_stderr_comes_from_the_executor_log(moto, rundir):
    """TESK uploads no outputs after a failed executor, and its executor log has no stderr: the
    pod's log (both streams) is the executor log's stdout, where the command repeats stderr."""
    access = S3Access(moto.endpoint, "testing", "testing")
    with TesServer(profile="tesk", s3=access, workers=1) as tesk:
        done = run(tesk, moto, rundir, BOOM)
    cause = done.error_json()["cause"]
    assert cause["exit_status"] == 7 and "going down" in read(cause["stderr_file"])
    assert "going down" in cause["tes_stderr_tail"]
    assert "outputs not uploaded by the server" in logs_of(done)


SLOW = """
version 1.1
task slow {
  command <<< sleep 120 >>>
  runtime { docker: "ubuntu:22.04" %s }
}
"""


def test_time_limits_cancel_the_task(tes_server, moto, rundir):
    done = run(tes_server, moto, rundir, SLOW % 'omnibio_time_limit: "2s"')
    assert done.returncode != 0
    assert "exceeded its time limit of 2 s (runtime.omnibio_time_limit)" in error_line(done)
    (task,) = run_tasks(tes_server, done.dir)
    assert task["state"] == "CANCELED"
    done = run(tes_server, moto, rundir, SLOW % "", default_time_limit="2")
    assert "exceeded its time limit of 2 s ([omnibio_tes] default_time_limit)" in error_line(done)
    (task,) = run_tasks(tes_server, done.dir)
    assert task["state"] == "CANCELED"
    assert not tes_server.containers()


READ = """
version 1.1
task read_it {
  input { File data }
  command <<< cat '~{data}' >>>
  output { String said = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_an_input_already_in_the_store_is_passed_through(tes_server, moto, s3, rundir):
    """miniwdl's download cache holds s3://<staging bucket>/ref/data.txt: the task gets that URL,
    nothing is uploaded for it."""
    uri = f"s3://{BUCKET}/ref/data.txt"
    s3.put_object(Bucket=BUCKET, Key="ref/data.txt", Body=b"from the store\n")
    cache = os.path.join(rundir, "cache")
    config = tes_config(tes_server.url, keep_staged="true")
    config["download_cache"] = {"dir": cache, "get": "true", "put": "true"}
    logger = logging.getLogger("test")
    cached = CallCache(Loader(logger, filenames=[], overrides=config), logger).download_path(uri)
    assert cached and cached.startswith(cache)
    os.makedirs(os.path.dirname(cached))
    write(os.path.dirname(cached), os.path.basename(cached), "from the store\n")
    done = run(tes_server, moto, rundir, READ, [f"data={uri}"], config=config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.outputs["read_it.said"] == "from the store"
    (task,) = run_tasks(tes_server, done.dir)
    assert [i["url"] for i in task["inputs"] if "url" in i] == [uri]
    keys = [k for k in staged_keys(s3, BUCKET) if workflow_run_of(done.dir) in k]
    assert not [k for k in keys if "/files/" in k or "/dirs/" in k], keys
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys]})


def test_offline_selftest_passes(tes_server, moto, rundir):
    from miniwdl_omnibio.cli.selftest import run as selftest

    assert selftest("omnibio_tes", rundir, env=env_for(tes_server, moto)) == []


BIG = r"""
version 1.2
task big {
  input { Directory empty }
  command <<<
    ls -A '~{empty}' | wc -l > entries.txt
    if test -d '~{empty}'; then echo there; else echo missing; fi > there.txt
    : '%s'
    wc -c < "$0" > length.txt
  >>>
  output { Int entries = read_int("entries.txt")  String there = read_string("there.txt") }
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_an_empty_directory_is_a_volume_and_a_long_command_is_uploaded(tes_server, moto, rundir):
    """An empty Directory input becomes a TES volume (no object can stand for it); a command
    longer than the 128 KiB the spec asks servers to take as content goes as a staged URL."""
    empty = os.path.join(rundir, "empty")
    os.makedirs(empty)
    filler = "x" * (CONTENT_MAX_BYTES + 1024)
    done = run(tes_server, moto, rundir, BIG % filler, [f"empty={empty}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.outputs["big.entries"] == 0 and done.outputs["big.there"] == "there"
    (task,) = run_tasks(tes_server, done.dir)
    (volume,) = task["volumes"]
    assert not [i for i in task["inputs"] if i["path"] == volume]
    command = next(i for i in task["inputs"] if i["path"].endswith("/command"))
    assert "content" not in command and command["url"].startswith(f"s3://{BUCKET}/tes/")
    assert os.path.getsize(os.path.join(done.dir, "command")) > CONTENT_MAX_BYTES
