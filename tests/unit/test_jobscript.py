"""The job script's exit record: the real wrapper run by /bin/sh, fake cgroup files, the reader."""

import os
import subprocess

import pytest

from miniwdl_omnibio.engines.jobscript import (
    CGROUP_VARIABLE,
    FUNCTIONS,
    MISSING_FILESYSTEM_EXIT,
    ExitRecord,
    command,
    double_quoted,
    exit_record,
    parse_exit_record,
    read_exit_record,
)


def _run(
    tmp_path, script: str, cgroup=None, **hooks: str
) -> tuple[subprocess.CompletedProcess, str]:
    record = exit_record(str(tmp_path), 1)
    env = {"PATH": os.environ["PATH"], CGROUP_VARIABLE: str(cgroup or tmp_path / "no-cgroup")}
    argv = command(["/bin/sh", "-c", script], record, str(tmp_path), "not here", **hooks)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    return done, record


def _v2(root, peak=209_715_200, usec=1_500_000, oom_kills=0):
    root.mkdir()
    (root / "memory.peak").write_text(f"{peak}\n")
    (root / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec 1\nsystem_usec 2\n")
    (root / "memory.events").write_text(f"low 0\nhigh 0\nmax 3\noom 1\noom_kill {oom_kills}\n")
    return root


def _v1(root, peak=104_857_600, nsec=2_500_000_000, oom_kills=1):
    (root / "memory").mkdir(parents=True)
    (root / "cpuacct").mkdir()
    (root / "memory" / "memory.max_usage_in_bytes").write_text(f"{peak}\n")
    (root / "cpuacct" / "cpuacct.usage").write_text(f"{nsec}\n")
    (root / "memory" / "memory.oom_control").write_text(
        f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kills}\n"
    )
    return root


def test_exit_0_with_cgroup_v2_usage(tmp_path):
    done, record = _run(tmp_path, "echo out; exit 0", cgroup=_v2(tmp_path / "cg"))
    assert done.returncode == 0 and done.stdout == "out\n"
    assert read_exit_record(record) == (
        True,
        ExitRecord(0, oom=False, memory_peak=209_715_200, cpu_seconds=1.5),
    )
    assert not os.path.exists(record + ".tmp")


def test_in_place_writes_the_record_without_a_rename(tmp_path):
    """docker's record: read only once the container ended, so no .tmp and no mv process."""
    record = exit_record(str(tmp_path), 1)
    argv = command(["/bin/sh", "-c", "exit 4"], record, str(tmp_path), "not here", in_place=True)
    env = {"PATH": "/nowhere", CGROUP_VARIABLE: str(tmp_path / "no-cgroup")}  # no mv to run
    assert subprocess.run(argv, env=env, timeout=30).returncode == 4
    assert read_exit_record(record)[1] == ExitRecord(4)
    assert not os.path.exists(record + ".tmp")


def test_exit_3_with_cgroup_v1_usage_and_oom(tmp_path):
    done, record = _run(tmp_path, "exit 3", cgroup=_v1(tmp_path / "cg"))
    assert done.returncode == 3
    started, found = read_exit_record(record)
    assert started and found == ExitRecord(3, oom=True, memory_peak=104_857_600, cpu_seconds=2.5)
    assert found.usage() == {"memory_peak": 104_857_600, "cpu_seconds": 2.5}


def test_a_killed_command_is_recorded_as_the_shell_reports_it(tmp_path):
    done, record = _run(tmp_path, "kill -9 $$", cgroup=_v2(tmp_path / "cg", oom_kills=2))
    assert done.returncode == 137
    assert read_exit_record(record)[1] == ExitRecord(
        137, oom=True, memory_peak=209_715_200, cpu_seconds=1.5
    )


def test_unreadable_cgroup_leaves_the_fields_out(tmp_path):
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    (cgroup / "memory.peak").write_text("max\n")  # not a number
    done, record = _run(tmp_path, "exit 0", cgroup=cgroup)
    assert done.returncode == 0
    found = read_exit_record(record)[1]
    assert found == ExitRecord(0) and found.usage() == {}
    assert open(record).read() == "exit_code=0\n"


def test_the_record_is_empty_while_the_command_runs(tmp_path):
    record = exit_record(str(tmp_path), 1)
    script = f"test -e {record} && test ! -s {record} && echo running"
    done, _ = _run(tmp_path, script)
    assert done.stdout == "running\n" and read_exit_record(record)[1] == ExitRecord(0)


def test_prepare_and_on_failure_hooks(tmp_path):
    done, record = _run(
        tmp_path,
        "echo $GREETING; exit 5",
        prepare="export GREETING=hi",
        on_failure="echo failed >&2",
    )
    assert (done.returncode, done.stdout, done.stderr) == (5, "hi\n", "failed\n")
    assert read_exit_record(record)[1] == ExitRecord(5)


def test_a_missing_filesystem_is_one_documented_exit_code(tmp_path):
    """A bind mount without the filesystem: docker made the directories, not the launcher's file."""
    seen = tmp_path / "call-t"
    (seen / "work").mkdir(parents=True)
    record = exit_record(str(seen), 1)
    argv = command(["true"], record, str(seen / "stdout.txt"), f"{double_quoted('$ `x`')} on $NODE")
    done = subprocess.run(
        argv, env={"PATH": os.environ["PATH"], "NODE": "n1"}, capture_output=True, text=True
    )
    assert done.returncode == MISSING_FILESYSTEM_EXIT
    assert done.stderr == "omnibio: $ `x` on n1\n"
    assert read_exit_record(record) == (False, None)


def test_own_cgroup_is_found_without_the_variable(tmp_path):
    """Without OMNIBIO_CGROUP the functions read this process's own cgroup: whatever it holds
    here, the output is only well-formed fields."""
    done = subprocess.run(
        ["/bin/sh", "-c", FUNCTIONS + "omnibio_usage"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == ""
    for line in done.stdout.splitlines():
        key, value = line.split("=")
        assert key in ("memory_peak", "cpu_usec", "oom") and value


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", None),
        ("exit_code=\n", None),
        ("exit_code=abc\n", None),
        ("exit_code=0\n", ExitRecord(0)),
        (
            "exit_code=143\noom=false\ntimed_out=true\nstarted=true\nsignalled=true\n",
            ExitRecord(143, timed_out=True, signalled=True),
        ),
        (
            "exit_code=125\noom=false\ntimed_out=false\nstarted=false\n",
            ExitRecord(125, started=False),
        ),
        ("exit_code=1\noom=true\noom=false\nfuture=1\n", ExitRecord(1)),  # a later line wins
    ],
)
def test_parse(text, expected):
    assert parse_exit_record(text) == expected
