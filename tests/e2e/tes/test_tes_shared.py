"""omnibio_tes in shared-filesystem mode (the opt-in): the test server's worker mounts a host
directory, as a Funnel worker with a --volume does; files are used in place, nothing staged."""

import json
import os
import tempfile

from tests.e2e.tes.runs import read, run, run_tasks, write
from tests.e2e.tes.support import READONLY_VIEW, shared_config
from tests.emulators.tes_server import TesServer
from tests.helpers import error_line

WHERE = r"""
version 1.1
task where {
  input { File data }
  command <<<
    pwd > pwd.txt
    stat -L -c %i '~{data}' > inode.txt
    if echo x >> '~{data}' 2> /dev/null; then echo writable; else echo read-only; fi > write.txt
    python3 -m miniwdl_omnibio.runtime.echo_test >&2
  >>>
  output {
    String pwd = read_string("pwd.txt")
    Int inode = read_int("inode.txt")
    String write = read_string("write.txt")
    File result = "omnibio_result.json"
  }
  runtime { docker: "omnibio/runtime:latest" }
}
"""


def test_files_in_place_through_the_workers_mount(moto, shared_dir):
    """The workers mount the directory at /omnibio-shared (read-write) and at the read-only view;
    this host at its own path (host_mount_path)."""
    rundir = tempfile.mkdtemp(prefix="shared-", dir=shared_dir)
    os.chmod(rundir, 0o755)
    volumes = [f"{shared_dir}:/omnibio-shared", f"{shared_dir}:{READONLY_VIEW}:ro"]
    with TesServer(worker_volumes=volumes, workers=1) as server:
        data = write(rundir, "data.txt", "precious\n")
        config = shared_config(
            server.url,
            "/omnibio-shared",
            host_mount_path=shared_dir,
            readonly_mount_path=READONLY_VIEW,
        )
        config["omnibio"]["result_uri_prefix"] = f"file://{shared_dir}/results"
        done = run(server, moto, rundir, WHERE, [f"data={data}"], config=config)
        assert done.returncode == 0, done.stderr[-3000:]
        (task,) = run_tasks(server, done.dir)
        probes = [t for t in server.tasks() if "omnibio.probe" in (t.get("tags") or {})]
    assert done.outputs["where.pwd"] == "/omnibio-shared" + done.dir[len(shared_dir) :] + "/work"
    assert done.outputs["where.inode"] == os.stat(data).st_ino  # the same file, not a copy
    assert done.outputs["where.write"] == "read-only" and read(data) == "precious\n"
    assert json.loads(read(done.outputs["where.result"]))["ok"] is True
    assert not task.get("inputs") and not task.get("outputs")
    assert [p["state"] for p in probes] == ["COMPLETE"]


def test_workers_without_the_mount_fail_at_start(moto, shared_dir, rundir):
    with TesServer(workers=1) as server:  # mounts nothing from this host, as real servers
        done = run(
            server,
            moto,
            rundir,
            "version 1.1\ntask t { command <<< true >>> }\n",
            config=shared_config(server.url, shared_dir),
        )
        assert done.returncode != 0
        line = error_line(done)
        assert f"do not see [omnibio_tes] mount_path {shared_dir}" in line and "probe task" in line
        assert "Worker.Container.RunCommand" in line
        assert {t["state"] for t in server.tasks()} == {"EXECUTOR_ERROR"}  # the probe, ended
    assert not [d for d in os.listdir(shared_dir) if d.startswith(".omnibio-probe-")]
