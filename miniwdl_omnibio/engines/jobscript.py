"""The job script's exit record: one format, the POSIX sh that writes it, and its one reader.

Engines whose workers share the run directory (AWS Batch, Azure Batch, Slurm) learn that an
attempt started and how it ended from a file on the shared filesystem, without asking the
service. One file per attempt (``exit_record``):

- absent: the command has not started (the job is queued, or its node lacks the filesystem);
- empty: the command runs;
- then ``key=value`` lines, written to ``<file>.tmp`` and renamed, so a reader never sees half
  (``in_place``: written where they go, for a reader that looks only once the job has ended):
  ``exit_code`` (always), and where known ``oom``, ``timed_out``, ``started``, ``signalled``,
  ``memory_peak`` (bytes), ``cpu_usec`` (microseconds) and ``image_id`` (the id of the image the
  container ran, where the script asked its runtime: Slurm's). A later line overrides an earlier
  one.

The usage fields come from the cgroup the command ran in, read after it ended (cgroup v2
``memory.peak``, ``cpu.stat`` usage_usec, ``memory.events`` oom_kill; v1
``memory/memory.max_usage_in_bytes``, ``cpuacct/cpuacct.usage``, ``memory/memory.oom_control``
oom_kill); a file that cannot be read leaves its field out. The cgroup is ``$OMNIBIO_CGROUP``
when set (the directory holding those files), else the caller's own: under cgroup v2
``/sys/fs/cgroup`` plus the path in ``/proc/self/cgroup`` (``/`` inside a private cgroup
namespace), under v1 ``/sys/fs/cgroup``, which docker mounts as the container's own. The files
are the kernel's (Documentation/admin-guide/cgroup-v2.rst: ``memory.peak`` since Linux 5.19,
``memory.events`` oom_kill counting the subtree; cgroup-v1/memory.rst and cpuacct.rst:
``cpuacct.usage`` in nanoseconds; ``memory.oom_control`` shows oom_kill on newer kernels, as on
this rig's docker containers).

How each engine uses it:

- Azure Batch: the task's command line is ``command()`` (azurebatch/translate.command), so the
  record is written from inside the container, into the attempt's host directory; ``fetch``
  reads the records first.
- AWS Batch: the job's command is ``command()`` (awsbatch/translate.job_command), with the
  task's stdout file, which the launcher wrote, as ``visible``; its ``cd`` to the working
  directory and the env file in ``prepare``, its stderr tail in ``on_failure``. ``fetch`` reads
  the records first and adds them to Batch's verdict with ``with_record``. The script is about
  1.9 KB of the containerOverrides' JSON, inside its budget.
- docker (local): the container's command is ``command()`` (docker/translate), the record in
  a bind of the task's directory, written in place: fetch reads it only once the daemon says
  the container ended (its die event, or a listing), so the rename's process is saved.
- Slurm: the element script runs outside the container, so it uses ``FUNCTIONS``:
  ``omnibio_record`` after ``docker wait`` / ``podman wait``. A stopped container's cgroup is
  gone by then, so the container's command runs under ``/bin/sh``, which writes
  ``omnibio_usage`` of its own cgroup into a bind of ``attemptN.usage`` once the command ends,
  and the element script adds those lines to the record (``OMNIBIO_CGROUP=/dev/null`` keeps the
  node's own cgroup out). Its batch script's exit 97 for an unreadable element script is the same
  ``MISSING_FILESYSTEM_EXIT``.
"""

import contextlib
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .base import Phase, Status

# the command did not run: the directory of its exit record is not visible where the job runs
# (the node does not mount the shared filesystem there)
MISSING_FILESYSTEM_EXIT = 97
CGROUP_VARIABLE = "OMNIBIO_CGROUP"

# omnibio_usage prints the usage fields of the cgroup; omnibio_record FILE EXIT_CODE [key=value
# ...] writes a record: to FILE$OMNIBIO_PART (.tmp while unset), then renamed to FILE. Builtins
# only (read, case, printf), but for that mv.
FUNCTIONS = r"""omnibio_read() {
  v=; [ -r "$1" ] && read -r v <"$1"
  case $v in ''|*[!0-9]*) return 1;; esac
}
omnibio_field() {
  [ -r "$1" ] || return 1
  while read -r k n; do [ "$k" = "$2" ] && { v=$n; return 0; }; done <"$1"; return 1
}
omnibio_usage() {
  cg=${OMNIBIO_CGROUP:-}
  if [ -z "$cg" ]; then
    cg=/sys/fs/cgroup
    if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
      while IFS= read -r line; do
        case $line in 0::/*) cg=/sys/fs/cgroup${line#0::}; break;; esac
      done </proc/self/cgroup
    fi
  fi
  if omnibio_read "$cg/memory.peak" || omnibio_read "$cg/memory/memory.max_usage_in_bytes"; then
    printf 'memory_peak=%s\n' "$v"
  fi
  if omnibio_field "$cg/cpu.stat" usage_usec; then
    printf 'cpu_usec=%s\n' "$v"
  elif omnibio_read "$cg/cpuacct/cpuacct.usage"; then
    printf 'cpu_usec=%s\n' $((v / 1000))
  fi
  if omnibio_field "$cg/memory.events" oom_kill \
    || omnibio_field "$cg/memory/memory.oom_control" oom_kill; then
    if [ "$v" -gt 0 ] 2>/dev/null; then echo oom=true; else echo oom=false; fi
  fi
}
omnibio_record() {
  f=$1; t=$1${OMNIBIO_PART-.tmp}; shift
  {
    printf 'exit_code=%s\n' "$1"; shift
    omnibio_usage
    for field in "$@"; do printf '%s\n' "$field"; done
  } >"$t" && { [ "$t" = "$f" ] || mv -f "$t" "$f"; }
}
"""

# the wrapper around the task's argv ("$@"), after the check that sets $EXIT, the record
_WRAPPER = """{prepare}"$@"
rc=$?
omnibio_record "$EXIT" "$rc" 2>/dev/null
{recorded}{on_failure}exit "$rc"
"""


def exit_record(host_dir: str, attempt: int) -> str:
    """The attempt's exit record in its task's directory on the shared filesystem."""
    return os.path.join(host_dir, f"omnibio_exit.{attempt}")


def double_quoted(text: str) -> str:
    """``text`` for the inside of a double-quoted shell string, expanding nothing."""
    return "".join("\\" + c if c in '"\\$`' else c for c in text)


def wrapper(
    record: str,
    visible: str,
    missing: str,
    prepare: str = "",
    on_failure: str = "",
    recorded: str = "",
    in_place: bool = False,
) -> str:
    """The sh script that runs its arguments as the task's command and writes ``record`` (paths
    as the job sees them). ``visible`` is a file the launcher wrote before submitting: the
    directories of a bind mount that lacks the shared filesystem may exist all the same (docker
    makes the working directory), a file does not. Without it the script prints ``missing`` on
    stderr, the body of a double-quoted string (its ``$VARIABLES`` expand, e.g. a node id;
    ``double_quoted`` escapes literal text), and exits ``MISSING_FILESYSTEM_EXIT``. ``prepare``
    runs before the command (after the record says it runs), ``on_failure`` after a non-zero
    exit, ``recorded`` after the record is written (e.g. to hand it to the launcher's user); all
    are sh lines an engine adds. ``in_place``: the record is not renamed into place, for an
    engine that reads it only after the job ended."""
    head = (
        f"OMNIBIO_PART={'' if in_place else '.tmp'}\n"
        f"EXIT={shlex.quote(record)}\n"
        f'[ -e {shlex.quote(visible)} ] || {{ echo "omnibio: {missing}" >&2; '
        f"exit {MISSING_FILESYSTEM_EXIT}; }}\n"
        'true 2>/dev/null >"$EXIT"\n'
    )
    failure = f'if [ "$rc" -ne 0 ]; then {on_failure}; fi\n' if on_failure else ""
    return (
        FUNCTIONS
        + head
        + _WRAPPER.format(
            prepare=prepare + "\n" if prepare else "",
            recorded=recorded + "\n" if recorded else "",
            on_failure=failure,
        )
    )


def command(
    argv: Sequence[str],
    record: str,
    visible: str,
    missing: str,
    in_place: bool = False,
    **hooks: str,
) -> list[str]:
    """``argv`` run by ``wrapper`` (``hooks``: its ``prepare``, ``on_failure``, ``recorded``)."""
    script = wrapper(record, visible, missing, in_place=in_place, **hooks)
    return ["/bin/sh", "-c", script, "omnibio", *argv]


@dataclass(frozen=True)
class ExitRecord:
    """What the job script recorded of an attempt that ended."""

    exit_code: int
    oom: bool = False  # the cgroup's oom_kill count (or the runtime's OOMKilled) says so
    timed_out: bool = False  # the script ended it at its time limit
    started: bool = True  # the container ever started
    signalled: bool = False  # a signal ended the script: the service's verdict counts
    memory_peak: int | None = None  # bytes, where the cgroup said
    cpu_seconds: float | None = None
    image_id: str | None = None  # as the container runtime gave it

    def usage(self) -> dict[str, Any]:
        """The measured usage, for Status.details["usage"]; {} when nothing was measured."""
        usage: dict[str, Any] = {}
        if self.memory_peak is not None:
            usage["memory_peak"] = self.memory_peak
        if self.cpu_seconds is not None:
            usage["cpu_seconds"] = self.cpu_seconds
        return usage


def parse_exit_record(text: str) -> ExitRecord | None:
    """The record in ``text``; None while it says nothing (empty: the command runs) or holds no
    exit code a number."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            fields[key] = value
    code = fields.get("exit_code", "")
    if not code.isdigit():
        return None

    def number(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    cpu_usec = number("cpu_usec")
    return ExitRecord(
        exit_code=int(code),
        oom=fields.get("oom") == "true",
        timed_out=fields.get("timed_out") == "true",
        started=fields.get("started", "true") == "true",
        signalled=fields.get("signalled") == "true",
        memory_peak=number("memory_peak"),
        cpu_seconds=None if cpu_usec is None else cpu_usec / 1e6,
        image_id=fields.get("image_id") or None,
    )


def clear(*paths: str) -> None:
    """Remove what an earlier submission of the same attempt left: its exit record would end the
    new one at once."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def read_exit_record(path: str) -> tuple[bool, ExitRecord | None]:
    """(started, record): (False, None) while the file is absent, (True, None) while empty."""
    try:
        with open(path, encoding="utf-8") as infile:
            text = infile.read()
    except OSError:
        return False, None
    return True, parse_exit_record(text)


USAGE_SOURCE = "cgroup, read by the job script"


def usage_details(record: ExitRecord) -> dict[str, Any]:
    """Status.details' "usage": what the job script measured of the command's cgroup."""
    usage = record.usage()
    return {"usage": {**usage, "source": USAGE_SOURCE}} if usage else {}


def succeeded(record: ExitRecord, **details: Any) -> Status:
    """An attempt whose record says exit status 0: done, the service not asked."""
    return Status(
        Phase.DONE,
        exit_code=0,
        reason="exit status 0",
        details={**details, **usage_details(record)},
    )


def with_record(status: Status, record: ExitRecord | None) -> Status:
    """The service's verdict on an ended attempt, with what its exit record adds: the cgroup's
    oom_kill (a typed OOM beside the service's own) and the measured usage."""
    if record is None or status.phase is not Phase.DONE:
        return status
    return replace(
        status,
        oom=status.oom or record.oom,
        details={**status.details, **usage_details(record)},
    )
