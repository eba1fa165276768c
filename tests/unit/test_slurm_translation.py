"""omnibio_slurm translation: sbatch options, the batch and element scripts (no Slurm needed).

The scripts are run for real with /bin/sh; container runtimes other than docker are stand-in
commands on PATH that record their arguments (tests/e2e/slurm runs podman for real).
"""

import dataclasses
import logging
import os
import shlex
import stat
import subprocess
import time

import pytest
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.engines.jobscript import MISSING_FILESYSTEM_EXIT, ExitRecord, read_exit_record
from miniwdl_omnibio.engines.slurm.engine import SlurmEngine
from miniwdl_omnibio.engines.slurm.translate import (
    USAGE_PATH,
    SlurmSettings,
    apptainer_image,
    batch_script,
    measured,
    sbatch_argv,
    translate,
)

GiB = 1 << 30


def make_attempt(host_dir, root="/shared", **changes):
    fields = dict(
        run_id="20260101_000000_w.call-x-3.1",
        call="call-x-3",
        workflow_run="20260101_000000_w",
        attempt=1,
        image="ubuntu:22.04",
        argv=("/bin/sh", "-c", "echo hi"),
        workdir=f"/mnt/c{host_dir}/work",
        env={"TOOL_ID": "x", "SECRET_TOKEN": "it's\nmultiline $HOME"},
        mounts=(Mount(root, "/mnt/c", False), Mount(root, "/mnt/ro", True)),
        resources=Resources(
            cpu=2,
            memory_reservation=GiB,
            memory_limit=GiB,
            gpu=0,
            disk=None,
            time_limit=None,
            max_interruptions=0,
        ),
        tags={
            "omnibio.run": "20260101_000000_w",
            "omnibio.call": "call-x-3",
            "omnibio.task": "x",
        },
        stdout_path=f"{host_dir}/stdout.txt",
        stderr_path=f"{host_dir}/stderr.txt",
        host_dir=host_dir,
    )
    resources = changes.pop("resources", {})
    fields.update(changes)
    fields["resources"] = Resources(**{**fields["resources"].__dict__, **resources})
    return TaskAttempt(**fields)


def read(path):
    with open(path) as infile:
        return infile.read()


def make_settings(host_root="/shared", node_root="", **changes):
    """[omnibio_slurm] with its defaults, the shared filesystem at ``host_root`` (on the nodes
    at ``node_root``, else the same), and ``changes`` to its fields."""
    section = {"mount_path": host_root, "node_mount_path": node_root}
    cfg = Loader(logging.getLogger("test"), filenames=[], overrides={"omnibio_slurm": section})
    return dataclasses.replace(SlurmSettings.load(cfg), **changes)


def test_sbatch_options_from_resources_config_and_runtime():
    attempt = make_attempt(
        "/shared/run/call-x-3",
        resources={"gpu": 1, "time_limit": 61, "cpu": 4},
        runtime={"slurm_partition": "gpu", "slurm_qos": "long"},
    )
    engine = SlurmEngine.__new__(SlurmEngine)  # its translate, without start (which needs Slurm)
    engine.settings = make_settings(
        partition="batch", account="lab", extra_options=("--exclusive",)
    )
    request = engine.translate(attempt)
    assert request.options == (
        "--cpus-per-task=4",
        "--mem=1024M",
        "--no-requeue",
        "--gres=gpu:1",
        "--time=2",  # minutes, rounded up: 61 s never gets less
        "--partition=gpu",  # runtime.slurm_partition over [omnibio_slurm] partition
        "--account=lab",
        "--qos=long",
        "--exclusive",
    )
    assert (request.partition, request.cpu, request.memory, request.gpu) == ("gpu", 4, GiB, 1)


def test_default_memory_when_the_task_sets_none():
    attempt = make_attempt("/shared/r/c", resources={"memory_limit": 0, "memory_reservation": 0})
    assert "--mem=2048M" in translate(attempt, make_settings(default_memory=2 * GiB)).options


def test_time_option_rounds_up_to_minutes():
    def minutes(seconds):
        attempt = make_attempt("/shared/r/c", resources={"time_limit": seconds})
        options = translate(attempt, make_settings()).options
        return next(o for o in options if o.startswith("--time="))

    assert [minutes(s) for s in (1, 60, 61, 3600)] == [f"--time={m}" for m in (1, 1, 2, 60)]


def test_sbatch_argv_lone_job_and_array():
    lone = translate(make_attempt("/shared/run/call-x-3"), make_settings())
    argv = sbatch_argv([lone], "L1")
    assert "--array" not in " ".join(argv)
    assert "--job-name=20260101_000000_w.call-x-3" in argv
    assert "--comment=omnibio run=20260101_000000_w call=call-x-3 launcher=L1" in argv
    assert "--chdir=/shared/run/call-x-3/work" in argv
    assert "--output=/dev/null" in argv and "--no-requeue" in argv
    other = translate(make_attempt("/shared/run/call-x-4"), make_settings())
    argv = sbatch_argv([lone, other], "L1")
    assert "--array=0-1" in argv
    assert "--job-name=20260101_000000_w.x[2]" in argv
    assert "--chdir=/shared/run" in argv


def write_element(request, script):
    os.makedirs(request.files.host_dir, exist_ok=True)
    with open(request.files.host("sh"), "w") as out:
        out.write(script)
    with open(request.files.host("env"), "w") as out:
        out.write(request.env)


def test_batch_script_runs_the_element_of_its_index(tmp_path):
    root = str(tmp_path)
    settings = make_settings(host_root=root, node_root=root)
    requests = [translate(make_attempt(f"{root}/run/call-x-{i}", root), settings) for i in range(3)]
    for i, request in enumerate(requests):
        write_element(request, f"echo element {i}; exit {10 + i}\n")
    script = tmp_path / "batch.sh"
    script.write_text(batch_script(requests))
    for i, request in enumerate(requests):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(i))
        done = subprocess.run(["/bin/sh", str(script)], env=env)
        assert done.returncode == 10 + i
        assert read(request.files.host("log")) == f"element {i}\n"
    os.unlink(requests[1].files.host("sh"))  # the node does not see the shared filesystem
    done = subprocess.run(["/bin/sh", str(script)], env=dict(os.environ, SLURM_ARRAY_TASK_ID="1"))
    assert done.returncode == MISSING_FILESYSTEM_EXIT


def test_environment_file_round_trips_through_the_shell(tmp_path):
    request = translate(make_attempt("/shared/r/c"), make_settings())
    (tmp_path / "env").write_text(request.env)
    out = subprocess.run(
        ["/bin/sh", "-c", f'set -a; . {tmp_path}/env; printf %s "$SECRET_TOKEN"'],
        capture_output=True,
        text=True,
    ).stdout
    assert out == "it's\nmultiline $HOME"


def run_words(script, runtime):
    """The words of the element script's ``<runtime> run -d`` (its last word spans lines)."""
    start = script.index(f"if ! {runtime} run -d") + len("if ! ")
    return shlex.split(script[start : script.index(" >/dev/null; then\n", start)])


def test_docker_command_line_keeps_values_off_it():
    attempt = make_attempt(
        "/shared/run/call-x-3", user="1000:1000", privileged=True, resources={"gpu": 1}
    )
    script = translate(attempt, make_settings(node_root="/nodes/shared")).script
    words = run_words(script, "docker")
    assert words[:5] == ["docker", "run", "-d", "--name", "$NAME"]
    assert "-v" in words and "/nodes/shared:/mnt/c" in words and "/nodes/shared:/mnt/ro:ro" in words
    assert "--memory=1073741824" in words and "--memory-swap=1073741824" in words
    assert words[words.index("SECRET_TOKEN") - 1 : words.index("SECRET_TOKEN") + 1] == [
        "-e",
        "SECRET_TOKEN",
    ]
    assert "multiline" not in script  # values only in the 0600 env file
    assert "--user" in words and "1000:1000" in words and "--privileged" in words
    assert "$GPU_OPTIONS" in words and "SLURM_JOB_GPUS" in script
    assert "CUDA_VISIBLE_DEVICES" not in script  # job-relative once devices are constrained
    assert f"$USAGE:{USAGE_PATH}" in words  # the container's own measurement comes back here
    image = words.index("ubuntu:22.04")
    assert words[image + 1 : image + 3] == ["/bin/sh", "-c"] and "omnibio_usage" in words[image + 3]
    assert words[image + 4 :] == ["omnibio", "/bin/sh", "-c", "echo hi"]
    assert "cd /nodes/shared/run/call-x-3/work" in script


def test_podman_and_apptainer_command_lines():
    attempt = make_attempt("/shared/run/call-x-3", resources={"gpu": 1, "time_limit": 30})
    podman = translate(attempt, make_settings(runtime="podman")).script
    assert "podman run -d --name" in podman and "timeout 30 podman wait" in podman
    assert "nvidia.com/gpu=$d" in podman
    apptainer = translate(attempt, make_settings(runtime="apptainer"))
    assert "export APPTAINERENV_SECRET_TOKEN=" in apptainer.env
    line = next(x for x in apptainer.script.splitlines() if "apptainer exec" in x)
    words = shlex.split(line.rstrip(" &"))
    assert words[:6] == ["timeout", "-s", "TERM", "-k", "10", "30"]
    assert words[6:9] == ["apptainer", "exec", "--cleanenv"]
    assert "--bind" in words and "/shared:/mnt/ro:ro" in words and "--nv" in words
    assert "docker://ubuntu:22.04" in words
    assert apptainer_image("/images/x.sif") == "/images/x.sif"
    assert apptainer_image("oras://r/x:1") == "oras://r/x:1"


@pytest.mark.parametrize("runtime", ["docker", "podman", "apptainer"])
def test_runtime_options_go_before_the_image(runtime):
    options = ("--ulimit", "nofile=1024:1024") if runtime != "apptainer" else ("--contain",)
    settings = make_settings(runtime=runtime, runtime_options=options)
    script = translate(make_attempt("/shared/run/call-x-3"), settings).script
    if runtime == "apptainer":
        words = shlex.split(next(x for x in script.splitlines() if "exec" in x).rstrip(" &"))
    else:
        words = run_words(script, runtime)
    image = "ubuntu:22.04" if runtime != "apptainer" else "docker://ubuntu:22.04"
    assert words[words.index(image) - len(options) : words.index(image)] == list(options)


def run_element(tmp_path, runtime, stand_in, env=None, **attempt_changes):
    """Run an element script with ``stand_in`` as the container runtime command on PATH (and
    ``env`` as what Slurm sets for the job)."""
    root = str(tmp_path)
    request = translate(
        make_attempt(f"{root}/run/call-x-3", root, **attempt_changes),
        make_settings(runtime=runtime, host_root=root, node_root=root),
    )
    write_element(request, request.script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    path = bin_dir / runtime
    path.write_text("#!/bin/sh\n" + stand_in)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="7", **(env or {}))
    for name in ("SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"):
        if name not in (env or {}) or env[name] is None:
            env.pop(name, None)
    # a session of its own, as a job's: a stand-in may signal its whole process group
    done = subprocess.run(
        ["/bin/sh", request.files.host("sh")], env=env, timeout=30, start_new_session=True
    )
    started, record = read_exit_record(request.files.record)
    assert started and not os.path.exists(request.files.host("usage"))
    return done.returncode, record


# the container's side of a run, for a stand-in runtime: what measured() writes at its end
# into the bind of attemptN.usage, and a line of its own that the element script must ignore
MEASURED = (
    'for a in "$@"; do case $a in *:{usage}) printf "memory_peak=5\\ncpu_usec=2500000\\n'
    '{oom}exit_code=0\\n" >"${{a%:{usage}}}";; esac; done'
)


IMAGE = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    "wait_exit, inspect, cgroup_oom, expected",
    [
        ("3", "false", "", ExitRecord(3, memory_peak=5, cpu_seconds=2.5, image_id=IMAGE)),
        ("137", "true", "", ExitRecord(137, True, memory_peak=5, cpu_seconds=2.5, image_id=IMAGE)),
        # the cgroup's oom_kill counts when the runtime did not see it
        (
            "137",
            "false",
            "oom=true\\n",
            ExitRecord(137, True, memory_peak=5, cpu_seconds=2.5, image_id=IMAGE),
        ),
    ],
)
def test_element_script_records_the_exit_and_the_usage(
    tmp_path, wait_exit, inspect, cgroup_oom, expected
):
    """podman as a stand-in command: run -d "measures" (writes attemptN.usage as the wrapper
    would), wait prints the exit, inspect gives the container's image and says OOM."""
    calls = tmp_path / "calls"
    measured = MEASURED.format(usage=USAGE_PATH, oom=cgroup_oom)
    stand_in = (
        f'case "$1" in run) echo "$@" >>{calls}; {measured};; wait) echo {wait_exit};; '
        f'inspect) case "$3" in *.Image*) echo {IMAGE};; *) echo {inspect};; esac;; '
        f"rm) echo rm >>{calls};; esac\n"
    )
    assert run_element(tmp_path, "podman", stand_in) == (int(wait_exit), expected)
    assert "--name omnibio-7-0" in read(calls) and read(calls).endswith("rm\n")


def test_element_script_records_a_start_failure(tmp_path):
    stand_in = 'test "$1" = run && { echo "no such image" >&2; exit 125; }\n'
    returncode, record = run_element(tmp_path, "podman", stand_in)
    assert returncode == 125 and record == ExitRecord(125, started=False)


def test_a_container_created_after_a_signal_killed_the_cli_is_removed(tmp_path):
    """scancel signals every process of the job, the runtime's CLI too, while it may have asked
    the daemon for the container: the daemon creates it after the trap's first rm. The stand-in
    signals the whole job from inside ``run`` and "creates" the container a second later."""
    container, created = tmp_path / "container", tmp_path / "created"
    daemon = f"trap '' TERM; sleep 1; touch {container} {created}"
    stand_in = (
        f"case \"$1 $2\" in 'container inspect') test -e {container};; "
        f"run*) ({daemon}) & sleep 0.3; kill -TERM 0; sleep 10;; "
        f"rm*) rm -f {container};; esac\n"
    )
    returncode, record = run_element(tmp_path, "docker", stand_in)
    assert returncode == 143 and record == ExitRecord(143, signalled=True)
    for _ in range(50):  # the daemon's create, if the script ended before it
        if created.exists():
            break
        time.sleep(0.1)
    assert created.exists() and not container.exists()


def test_apptainer_script_stops_at_the_time_limit(tmp_path):
    returncode, record = run_element(
        tmp_path, "apptainer", "exec sleep 30\n", resources={"time_limit": 1}
    )
    # the node's own cgroup is not read (under v1 it would be the node's root)
    assert returncode == 124 and record == ExitRecord(124, timed_out=True)


def test_the_container_measures_its_own_cgroup_when_its_command_ends(tmp_path):
    """measured() run for real, with a cgroup v1 layout standing in for the container's."""
    cgroup = tmp_path / "cgroup"
    (cgroup / "memory").mkdir(parents=True)
    (cgroup / "cpuacct").mkdir()
    (cgroup / "memory" / "memory.max_usage_in_bytes").write_text("209715200\n")
    (cgroup / "cpuacct" / "cpuacct.usage").write_text("2000000000\n")
    usage = tmp_path / "usage"
    argv = measured(["/bin/sh", "-c", "exit 3"], str(usage))
    done = subprocess.run(argv, env=dict(os.environ, OMNIBIO_CGROUP=str(cgroup)))
    assert done.returncode == 3
    assert read(usage) == "memory_peak=209715200\ncpu_usec=2000000\n"


# What Slurm sets in a batch job given GPUs 2 and 3 of a node (sbatch(1) OUTPUT ENVIRONMENT
# VARIABLES; gres_common.c sets CUDA_VISIBLE_DEVICES and GPU_DEVICE_ORDINAL to the same list):
# with ConstrainDevices the job's own view counts from 0, SLURM_JOB_GPUS never does
CONSTRAINED = {"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1", "GPU_DEVICE_ORDINAL": "0,1"}
UNCONSTRAINED = {
    "SLURM_JOB_GPUS": "2,3",
    "CUDA_VISIBLE_DEVICES": "2,3",
    "GPU_DEVICE_ORDINAL": "2,3",
}
RECORD_RUN = (
    'case "$1" in run) printf "%s\\n" "$@" >>{calls};; wait) echo 0;; inspect) echo false;; esac\n'
)


@pytest.mark.parametrize(
    "devices", [CONSTRAINED, UNCONSTRAINED], ids=["constrained", "unconstrained"]
)
def test_docker_gets_the_jobs_gpus_by_their_node_wide_index(tmp_path, devices):
    calls = tmp_path / "calls"
    returncode, _record = run_element(
        tmp_path, "docker", RECORD_RUN.format(calls=calls), env=devices, resources={"gpu": 2}
    )
    words = read(calls).splitlines()
    assert returncode == 0
    # docker's --gpus takes a CSV value: a list of devices goes in double quotes
    assert words[words.index("--gpus") + 1] == '"device=2,3"'


@pytest.mark.parametrize(
    "devices", [CONSTRAINED, UNCONSTRAINED], ids=["constrained", "unconstrained"]
)
def test_podman_gets_the_jobs_gpus_as_cdi_devices_by_node_wide_index(tmp_path, devices):
    calls = tmp_path / "calls"
    run_element(
        tmp_path, "podman", RECORD_RUN.format(calls=calls), env=devices, resources={"gpu": 2}
    )
    words = read(calls).splitlines()
    devices_given = [words[i + 1] for i, w in enumerate(words) if w == "--device"]
    assert devices_given == ["nvidia.com/gpu=2", "nvidia.com/gpu=3"]


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_a_job_without_slurm_job_gpus_fails_naming_it_and_takes_no_gpu(tmp_path, capfd, runtime):
    calls = tmp_path / "calls"
    env = {"CUDA_VISIBLE_DEVICES": "0"}  # a count-only gres.conf: Slurm names no device
    returncode, record = run_element(
        tmp_path, runtime, RECORD_RUN.format(calls=calls), env=env, resources={"gpu": 1}
    )
    assert returncode == 125 and not record.started
    assert not calls.exists()  # the runtime was never asked to run anything
    said = capfd.readouterr().err  # the batch script sends it to attemptN.log
    assert "error" in said and "SLURM_JOB_GPUS" in said
