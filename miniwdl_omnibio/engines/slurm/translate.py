"""Pure translation of a TaskAttempt into Slurm terms: sbatch options and the shell scripts.

Each attempt gets files in ``<task run dir>/slurm/`` on the shared filesystem: ``attemptN.sh``
(runs the container on the node), ``attemptN.env`` (its environment, never on a command line),
and later ``attemptN.log`` (the script's own output) and ``attemptN.usage`` (what the container
measured of itself); what happened goes in the attempt's exit record (``jobscript``). The
batch script handed to sbatch only chooses an element's ``attemptN.sh`` by
``$SLURM_ARRAY_TASK_ID``, so attempts ready together share one ``sbatch --array`` when their
sbatch options are equal. Nothing here does I/O.
"""

import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ...attempt import TAG_CALL, TAG_RUN, TAG_TASK, Mount, TaskAttempt
from ...placement.sharedfs import SharedFilesystem
from ..jobscript import FUNCTIONS, MISSING_FILESYSTEM_EXIT, exit_record
from .cluster import Partition
from .settings import SlurmSettings

# the batch script's exit code when it has no element for the array index it was given (cannot
# happen unless the array was changed with scontrol); one that cannot read an element's script
# (the node lacks the shared filesystem at node_mount_path) exits MISSING_FILESYSTEM_EXIT
EXIT_NO_ELEMENT = 98
# where a docker or podman container sees its attemptN.usage (a bind of the one file)
USAGE_PATH = "/.omnibio_usage"
# words of oci_run the script expands, as shell words already; $GPU_OPTIONS unquoted on purpose:
# zero or more words
NAME, USAGE_BIND, GPU_OPTIONS = '"$NAME"', f'"$USAGE:{USAGE_PATH}"', "$GPU_OPTIONS"


@dataclass(frozen=True)
class ElementFiles:
    """Where one attempt's files are, on miniwdl's host and on the node."""

    host_dir: str
    node_dir: str
    name: str  # attemptN
    record: str  # the exit record on miniwdl's host (jobscript.exit_record)
    # the task's work directory (miniwdl creates it before submitting) as the nodes see it
    work_dir: str

    def host(self, suffix: str) -> str:
        return os.path.join(self.host_dir, f"{self.name}.{suffix}")

    def node(self, suffix: str) -> str:
        return os.path.join(self.node_dir, f"{self.name}.{suffix}")


@dataclass(frozen=True)
class SlurmRequest:
    """One attempt as Slurm gets it: group key, per-element files and their contents."""

    workflow_run: str
    call: str
    task: str
    options: tuple[str, ...]  # sbatch options; attempts with equal options share an array
    partition: str  # empty: the cluster's default
    cpu: int
    memory: int  # bytes
    gpu: int
    files: ElementFiles
    script: str  # attemptN.sh
    env: str  # attemptN.env


def node_path(host_path: str, settings: SlurmSettings) -> str:
    """The path of a shared-filesystem file as the Slurm nodes see it: mapped as the containers'
    paths are, with the nodes' root in place of the containers'."""
    return SharedFilesystem(settings.host_root, settings.node_root, None).to_container(host_path)


def memory_bytes(attempt: TaskAttempt, default: int) -> int:
    """What Slurm allocates and the container may use: one figure (the engine declares
    memory_is_limit), so exceeding it is an OOM."""
    return attempt.resources.memory_limit or default


def sbatch_options(attempt: TaskAttempt, settings: SlurmSettings) -> tuple[str, ...]:
    """The options that decide where and how big the job is (equal options: one array)."""
    resources = attempt.resources
    options = [
        f"--cpus-per-task={resources.cpu}",
        f"--mem={math.ceil(memory_bytes(attempt, settings.default_memory) / (1 << 20))}M",
        # a lost node or preemption ends the job (NODE_FAIL, PREEMPTED) instead of requeueing it
        # behind our back: miniwdl retries it within runtime.preemptible
        "--no-requeue",
    ]
    if resources.gpu:
        options.append(f"--gres=gpu:{resources.gpu}")
    if resources.time_limit:  # in minutes (Slurm's unit), rounded up: never less than asked
        options.append(f"--time={max(1, math.ceil(resources.time_limit / 60))}")
    return tuple(options + placement(settings)) + settings.extra_options


def placement(settings: SlurmSettings) -> list[str]:
    """--partition, --account, --qos where set."""
    return [f"--{k}={v}" for k in ("partition", "account", "qos") if (v := getattr(settings, k))]


def misfit(request: SlurmRequest, partition: Partition | None) -> str | None:
    """Why no node of the request's partition can hold it (it would pend forever), or None."""
    nodes = f"node of partition {request.partition or '(default)'}"
    if partition is None:
        return f"runtime.slurm_partition: Slurm has no partition {request.partition!r}"
    if request.cpu > partition.max_cpu:
        return f"runtime.cpu {request.cpu} is more than any {nodes} has ({partition.max_cpu})"
    if request.memory > partition.max_memory:
        return (
            f"runtime.memory {request.memory} bytes is more than any {nodes} has "
            f"({partition.max_memory})"
        )
    if request.gpu > partition.gpus:
        return (
            f"runtime.gpu: no {nodes} has {request.gpu} GPU(s) (sinfo lists gres "
            f"gpu:{partition.gpus} at most)"
        )
    return None


def probe_argv(settings: SlurmSettings, node_file: str, token: str) -> list[str]:
    """sbatch of the start-time probe job, the smallest job, where the run's go: it exits 3 if
    the node cannot read the shared file, 4 if it has no container runtime on its PATH."""
    script = (
        f'test "$(cat {shlex.quote(node_file)} 2>/dev/null)" = {token} || exit 3; '
        f"command -v {settings.runtime} >/dev/null 2>&1 || exit 4"
    )
    smallest = ["--cpus-per-task=1", "--mem=16M", "--time=1", *placement(settings)]
    quiet = ["--output=/dev/null", "--error=/dev/null", "--job-name=omnibio-probe"]
    return ["sbatch", "--parsable", *smallest, *settings.extra_options, *quiet, f"--wrap={script}"]


def env_file(attempt: TaskAttempt, runtime: str) -> str:
    """The task's environment as shell exports; apptainer takes it as APPTAINERENV_<name>."""
    prefix = "APPTAINERENV_" if runtime == "apptainer" else ""
    return "".join(
        f"export {prefix}{name}={shlex.quote(value)}\n"
        for name, value in sorted(attempt.env.items())
    )


def _binds(flag: str, mounts: Sequence[Mount], settings: SlurmSettings) -> list[str]:
    """``flag source:target[:ro]`` per mount, the source as the nodes see it."""
    binds = []
    for m in mounts:
        source = node_path(m.host_path, settings)
        binds += [flag, f"{source}:{m.container_path}" + (":ro" if m.read_only else "")]
    return binds


def oci_run(attempt: TaskAttempt, settings: SlurmSettings) -> list[str]:
    """``docker|podman run -d`` of the attempt (the script waits, inspects and removes it)."""
    tool = settings.runtime
    memory = memory_bytes(attempt, settings.default_memory)
    argv = [tool, "run", "-d", "--name", NAME, "--log-driver=none"]
    argv += ["--label", f"omnibio.run_id={attempt.run_id}"]
    argv += [f"--cpus={attempt.resources.cpu}", f"--memory={memory}", f"--memory-swap={memory}"]
    argv += _binds("-v", attempt.mounts, settings)
    argv += ["-v", USAGE_BIND, "-w", attempt.workdir]
    for name in sorted(attempt.env):
        argv += ["-e", name]  # the value comes from the script's environment (attemptN.env)
    if attempt.user:
        argv += ["--user", attempt.user]
    if attempt.privileged:
        argv.append("--privileged")
    if attempt.resources.gpu:
        argv.append(GPU_OPTIONS)
    return argv + [*settings.runtime_options, attempt.image, *measured(attempt.argv)]


def measured(argv: Sequence[str], path: str = USAGE_PATH) -> list[str]:
    """``argv`` under a shell that writes the container's usage to ``path`` once it ended.

    The container's cgroup is gone when ``docker|podman wait`` returns (the runtime removes it at
    exit: seen on this rig's dockerd, cgroup v1), so the element script cannot read it; inside,
    ``/sys/fs/cgroup`` is the container's own (jobscript's ``omnibio_usage``)."""
    body = f'"$@"\nrc=$?\nomnibio_usage >{path} 2>/dev/null\nexit "$rc"\n'
    return ["/bin/sh", "-c", FUNCTIONS + body, "omnibio", *argv]


def apptainer_image(image: str) -> str:
    """A .sif path or URI as given; a registry name becomes docker://name."""
    if "://" in image or image.endswith(".sif") or image.startswith("/"):
        return image
    return "docker://" + image


def apptainer_exec(attempt: TaskAttempt, settings: SlurmSettings) -> list[str]:
    """``apptainer exec`` of the attempt: runs in the job itself, Slurm's cgroup limits it."""
    argv = ["apptainer", "exec", "--cleanenv", "--no-home", "--pwd", attempt.workdir]
    argv += _binds("--bind", attempt.mounts, settings)
    if attempt.resources.gpu:
        argv.append("--nv")
    return argv + [*settings.runtime_options, apptainer_image(attempt.image), *attempt.argv]


def _words(argv: Sequence[str]) -> str:
    return " ".join(
        word if word in (NAME, USAGE_BIND, GPU_OPTIONS) else shlex.quote(word) for word in argv
    )


# The element script. Its exit record (jobscript) tells the outcome even after Slurm has
# forgotten the job (MinJobAge, no accounting). Slurm signals the whole job on scancel, on its own
# time limit and on preemption (SIGTERM, then SIGKILL after KillWait: slurm.conf(5));
# docker/podman containers are not the job's processes, so the trap removes the container. A
# signal that comes while the runtime's CLI creates it kills the CLI too (Slurm signals every
# process of the job), and the daemon may finish the create after the trap's first rm: until the
# CLI returned, the trap looks for the container three times, a second apart, after writing the
# record (a "Created" container was seen left so). The exact time limit is the script's: Slurm's
# --time has minute resolution. OMNIBIO_CGROUP names nothing (under cgroup v1 jobscript's
# default would read the node's root): the record's usage is the memory_peak, cpu_usec and oom
# lines the container wrote into attemptN.usage (``measured``), its image_id the runtime's
# inspect of the container: the image it ran.
_HEAD = """#!/bin/sh
{functions}# omnibio_slurm: attempt {run_id}, written by miniwdl_omnibio; runs on the Slurm node
set -u
EXIT={exit_file}
USAGE={usage_file}
: >"$EXIT"
set -a
. {env_file}
set +a
OMNIBIO_CGROUP=/dev/null
cd {workdir} 2>/dev/null || cd /
"""

_OCI = """NAME="omnibio-${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}-${{SLURM_ARRAY_TASK_ID:-0}}"
GPU_OPTIONS=""
omnibio_image=
omnibio_ran=
{gpu}stop() {{
  {tool} rm -f "$NAME" >/dev/null 2>&1; rm -f "$USAGE"
  omnibio_record "$EXIT" 143 signalled=true "image_id=$omnibio_image"
  if [ -z "$omnibio_ran" ]; then
    for omnibio_look in 1 2 3; do
      sleep 1
      {tool} container inspect "$NAME" >/dev/null 2>&1 && {tool} rm -f "$NAME" >/dev/null 2>&1
    done
  fi
  exit 143
}}
trap stop TERM INT
: >"$USAGE" && chmod 666 "$USAGE"
if ! {run} >/dev/null; then
  {tool} rm -f "$NAME" >/dev/null 2>&1; rm -f "$USAGE"
  omnibio_record "$EXIT" 125 started=false
  exit 125
fi
omnibio_ran=1
omnibio_image=$({tool} inspect -f '{{{{.Image}}}}' "$NAME" 2>/dev/null)
{wait_cmd} >{wait_file} &
wait $!
waited=$?
timed_out=false
if [ "$waited" = 124 ]; then
  timed_out=true
  {tool} kill "$NAME" >/dev/null 2>&1
  {tool} wait "$NAME" >{wait_file}
fi
rc=$(cat {wait_file} 2>/dev/null)
rm -f {wait_file}
oom=$({tool} inspect -f '{{{{.State.OOMKilled}}}}' "$NAME" 2>/dev/null || echo false)
{tool} rm -f "$NAME" >/dev/null 2>&1
usage=
while read -r line; do
  case $line in memory_peak=*|cpu_usec=*|oom=*) usage="$usage $line";; esac
done <"$USAGE"
# the runtime's OOMKilled or the cgroup's oom_kill: either is an OOM
[ "$oom" = true ] && usage="$usage oom=true"
omnibio_record "$EXIT" "${{rc:-137}}" $usage timed_out=$timed_out "image_id=$omnibio_image"
rm -f "$USAGE"
exit "${{rc:-137}}"
"""

_APPTAINER = """trap 'omnibio_record "$EXIT" 143 signalled=true; exit 143' TERM INT
{run} &
wait $!
rc=$?
timed_out=false
if [ "$rc" = 124 ] && [ -n "{limit}" ]; then timed_out=true; fi
omnibio_record "$EXIT" "$rc" timed_out=$timed_out
exit "$rc"
"""

# The GPUs of the job by their node-wide index, SLURM_JOB_GPUS (sbatch(1)): docker and podman
# start the container outside the job's cgroup, where a job-relative index (CUDA_VISIBLE_DEVICES,
# GPU_DEVICE_ORDINAL) names another job's GPU. Without it the attempt fails with one line.
# docs/slurm.md, GPUs, cites the sources.
_GPU_IDS = """if [ -z "${{SLURM_JOB_GPUS:-}}" ]; then
  echo "omnibio_slurm error: Slurm set no SLURM_JOB_GPUS for this job, so its GPUs are unknown \
(gres.conf must name the GPU device files, or AutoDetect them)" >&2
  omnibio_record "$EXIT" 125 started=false
  exit 125
fi
{select}
"""
_GPU = {
    "docker": _GPU_IDS.format(select='GPU_OPTIONS="--gpus \\"device=$SLURM_JOB_GPUS\\""'),
    "podman": _GPU_IDS.format(
        select="for d in $(echo \"$SLURM_JOB_GPUS\" | tr , ' '); do "
        'GPU_OPTIONS="$GPU_OPTIONS --device nvidia.com/gpu=$d"; done'
    ),
}


def element_script(attempt: TaskAttempt, settings: SlurmSettings, files: ElementFiles) -> str:
    """The shell script that runs one attempt's container on the node and records its end."""
    limit = attempt.resources.time_limit
    head = _HEAD.format(
        functions=FUNCTIONS,
        run_id=attempt.run_id,
        exit_file=shlex.quote(node_path(files.record, settings)),
        usage_file=shlex.quote(files.node("usage")),
        env_file=shlex.quote(files.node("env")),
        workdir=shlex.quote(files.work_dir),
    )
    if settings.runtime == "apptainer":
        run = _words(apptainer_exec(attempt, settings))
        if limit:
            run = f"timeout -s TERM -k 10 {limit} {run}"
        return head + _APPTAINER.format(run=run, limit=limit or "")
    tool = settings.runtime
    wait_cmd = f'{tool} wait "$NAME"'
    if limit:
        wait_cmd = f"timeout {limit} {wait_cmd}"
    return head + _OCI.format(
        tool=tool,
        run=_words(oci_run(attempt, settings)),
        gpu=_GPU[tool] if attempt.resources.gpu else "",
        wait_cmd=wait_cmd,
        wait_file=shlex.quote(files.node("wait")),
    )


def translate(attempt: TaskAttempt, settings: SlurmSettings) -> SlurmRequest:
    """The attempt as a Slurm request (pure: the engine writes the files when it submits), under
    the settings of its task (the engine's, with the task's runtime.slurm_* keys)."""
    host_dir = os.path.join(attempt.host_dir, "slurm")
    files = ElementFiles(
        host_dir,
        node_path(host_dir, settings),
        f"attempt{attempt.attempt}",
        exit_record(attempt.host_dir, attempt.attempt),
        node_path(os.path.join(attempt.host_dir, "work"), settings),
    )
    return SlurmRequest(
        workflow_run=attempt.tags.get(TAG_RUN, attempt.workflow_run),
        call=attempt.tags.get(TAG_CALL, attempt.call),
        task=attempt.tags.get(TAG_TASK, ""),
        options=sbatch_options(attempt, settings),
        partition=settings.partition,
        cpu=attempt.resources.cpu,
        memory=memory_bytes(attempt, settings.default_memory),
        gpu=attempt.resources.gpu,
        files=files,
        script=element_script(attempt, settings, files),
        env=env_file(attempt, settings.runtime),
    )


def batch_script(requests: Sequence[SlurmRequest]) -> str:
    """What sbatch runs: element i (``$SLURM_ARRAY_TASK_ID``, 0 for a lone job) runs its script.

    The choice is written into the script (sbatch keeps a copy in slurmctld), so the only shared
    files an element reads are its own.
    """
    elements = "".join(
        f"{index}) dir={shlex.quote(request.files.node_dir)}; name={request.files.name} ;;\n"
        for index, request in enumerate(requests)
    )
    return f"""#!/bin/sh
# omnibio_slurm: one element per task attempt
case "${{SLURM_ARRAY_TASK_ID:-0}}" in
{elements}*) exit {EXIT_NO_ELEMENT} ;;
esac
[ -r "$dir/$name.sh" ] || exit {MISSING_FILESYSTEM_EXIT}
exec /bin/sh "$dir/$name.sh" >>"$dir/$name.log" 2>&1
"""


def sbatch_argv(requests: Sequence[SlurmRequest], launcher: str) -> list[str]:
    """sbatch for one or more requests with equal options: a lone job named <workflow
    run>.<call>, or an --array named <workflow run>.<task>[N]."""
    first, count = requests[0], len(requests)
    argv = ["sbatch", "--parsable", *first.options]
    if count == 1:
        name, calls = f"{first.workflow_run}.{first.call.replace('/', '.')}", first.call
    else:
        tasks = {r.task for r in requests}
        task = tasks.pop() if len(tasks) == 1 else "batch"
        name, calls = f"{first.workflow_run}.{task}[{count}]", f"{count} calls"
        argv.append(f"--array=0-{count - 1}")
    return argv + [
        f"--job-name={name}",
        # for accounting (sacct -o Comment), and the search for jobs of dead launchers
        f"--comment=omnibio run={first.workflow_run} call={calls} launcher={launcher}",
        # the task's work directory; an array's, the deepest directory holding every element's
        # (each element's script then changes into its own)
        f"--chdir={os.path.commonpath([r.files.work_dir for r in requests])}",
        # each element's script writes its own attemptN.log; the batch script says nothing
        "--output=/dev/null",
        "--error=/dev/null",
    ]
