"""Bad input on omnibio_slurm: one line naming the cause, and no job left behind."""

import os
import shutil

from tests.e2e.slurm.conftest import active_jobs, slurm_config
from tests.helpers import error_line, run_miniwdl, workflow_run_of

HELLO = (
    "version 1.1\ntask hello { command <<< echo hi >>> runtime { "
    'docker: "IMAGE" memory: "64 MiB" RUNTIME } }\n'
)


def run_hello(shared_dir, rundir, image="ubuntu:22.04", runtime="", env=None, **slurm_keys):
    wdl = os.path.join(rundir, "hello.wdl")
    with open(wdl, "w") as out:
        out.write(HELLO.replace("IMAGE", image).replace("RUNTIME", runtime))
    run = run_miniwdl(
        wdl,
        [],
        rundir,
        backend="omnibio_slurm",
        config=slurm_config(shared_dir, **slurm_keys),
        env=env,
        timeout=180,
    )
    assert run.returncode != 0
    if run.dir:
        assert active_jobs(workflow_run_of(run.dir)) == []
    return error_line(run)


def test_no_sbatch_on_path(shared_dir, rundir, tmp_path):
    # a PATH with docker but without the Slurm commands
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("docker"), bin_dir / "docker")
    line = run_hello(shared_dir, rundir, env={"PATH": str(bin_dir)})
    assert "sbatch" in line and "not found on PATH" in line


def test_slurmctld_unreachable(shared_dir, rundir, tmp_path):
    conf = tmp_path / "slurm.conf"
    with open(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")) as infile:
        text = infile.read().replace("SlurmctldPort=6817", "SlurmctldPort=6999")
    conf.write_text(text)
    line = run_hello(shared_dir, rundir, slurm_conf=str(conf))
    assert "sinfo failed" in line and "slurmctld" in line


def test_unknown_partition(shared_dir, rundir):
    line = run_hello(shared_dir, rundir, partition="nosuch")
    assert "[omnibio_slurm] partition" in line and "no partition 'nosuch'" in line


def test_gpu_larger_than_any_node(shared_dir, rundir):
    line = run_hello(shared_dir, rundir, runtime="gpu: true")
    assert "runtime.gpu" in line and "no node of partition" in line


def test_shared_path_the_node_cannot_see(shared_dir, rundir):
    line = run_hello(shared_dir, rundir, node_mount_path="/nonexistent/shared", probe="true")
    # the probe job's finding, before any task's job
    assert "a Slurm node cannot read /nonexistent/shared/" in line and "node_mount_path" in line


def test_container_runtime_the_node_lacks(shared_dir, rundir):
    line = run_hello(shared_dir, rundir, container_runtime="apptainer", probe="true")
    assert "apptainer is not on the PATH of the Slurm nodes" in line, line


def test_qos_unknown_to_the_accounting_database(accounting, shared_dir, rundir):
    line = run_hello(shared_dir, rundir, qos="nosuch")
    assert "[omnibio_slurm] qos" in line and "knows no qos 'nosuch'" in line, line


def test_account_unknown_to_the_accounting_database(accounting, shared_dir, rundir):
    line = run_hello(shared_dir, rundir, account="nosuch")
    assert "[omnibio_slurm] account" in line and "knows no account 'nosuch'" in line, line


def test_missing_image(shared_dir, rundir):
    line = run_hello(shared_dir, rundir, image="omnibio/no-such-image:1")
    assert "could not start its container" in line and "no-such-image" in line


def test_unknown_partition_in_the_task_runtime(shared_dir, rundir):
    line = run_hello(shared_dir, rundir, runtime='slurm_partition: "nosuch"')
    assert "runtime.slurm_partition" in line and "no partition 'nosuch'" in line
