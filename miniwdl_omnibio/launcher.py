"""This miniwdl process as the launcher of jobs and containers that may outlive it.

A service keeps what a process started after the process is gone (a SIGKILL, a lost session):
Slurm's queue, the docker daemon. Each job or container carries the identity of the process
that started it (Slurm: the job's --comment; docker: a label), and a later process on the same
host finds what a dead one left by it. The identity is ``<host>:<pid namespace>:<pid>:<start>``:
a pid names a process only on its host and in its PID namespace, and ``start`` (the process's
start time, proc(5) /proc/<pid>/stat field 22, in clock ticks since boot) tells a process from
a later one the kernel gave the same pid.
"""

import os
import socket


def _started(pid: int) -> str:
    """The start time of process ``pid`` (proc(5): field 22, starttime); "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as infile:
            stat = infile.read()
    except OSError:
        return ""
    # the fields after the command name, which may hold spaces and ")", start at field 3
    return stat.rpartition(")")[2].split()[22 - 3]


def _host() -> str:
    """This host and PID namespace: where a pid in an identity names a process one can test."""
    return f"{socket.gethostname()}:{os.stat('/proc/self/ns/pid').st_ino}"


def identity() -> str:
    """This process's identity, for the jobs and containers it starts."""
    pid = os.getpid()
    return f"{_host()}:{pid}:{_started(pid)}"


def ended(launcher: str) -> bool:
    """``launcher`` (an ``identity()``) names a process of this host and PID namespace that is
    gone, or whose pid is now another process's. A launcher of another host or namespace never
    ended as far as this process can tell."""
    rest, _sep, start = launcher.rpartition(":")
    host, _sep, pid = rest.rpartition(":")
    if not (pid.isdigit() and start.isdigit()):
        return False  # not an identity() (an earlier version's label): no evidence
    return host == _host() and _started(int(pid)) != start
