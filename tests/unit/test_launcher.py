"""The launcher identity: which jobs and containers a dead miniwdl process of this host left."""

import os
import subprocess

from miniwdl_omnibio import launcher


def test_this_process_is_alive_and_a_gone_or_reused_pid_ended():
    me = launcher.identity()
    host, pid, start = me.rsplit(":", 2)
    assert int(pid) == os.getpid() and start.isdigit() and not launcher.ended(me)
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    assert launcher.ended(f"{host}:{child.pid}:{start}")
    # a live pid whose start time differs: the kernel gave the pid to a later process
    assert launcher.ended(f"{host}:{pid}:{int(start) + 1}")


def test_a_launcher_of_another_host_or_pid_namespace_never_ended_here():
    host, namespace, _pid, start = launcher.identity().split(":")
    assert not launcher.ended(f"elsewhere:{namespace}:1:{start}")
    assert not launcher.ended(f"{host}:1:1:{start}")
    assert not launcher.ended("") and not launcher.ended("not an identity")


def test_a_label_that_is_not_an_identity_is_no_evidence():
    host = launcher.identity().rsplit(":", 2)[0]
    assert not launcher.ended(f"{host}:1:0a1b2c3d")  # an earlier version's pid:uuid label
