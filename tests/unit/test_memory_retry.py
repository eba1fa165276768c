"""An out-of-memory attempt retried with more memory: the calculation, the keys, the rule that
only a typed OOM raises it."""

import json
import logging
import types

import pytest
from WDL import Error, Value
from WDL.runtime.task_container import TaskContainer

from miniwdl_omnibio.attempt import Resources, memory_multiplier
from miniwdl_omnibio.config import ConfigError, OmnibioSettings
from miniwdl_omnibio.container import OmnibioContainer
from miniwdl_omnibio.contract import contract_env
from miniwdl_omnibio.engines.base import Phase, Status
from miniwdl_omnibio.progress import OpenJdProgress
from tests.unit.test_trace import _cfg

MiB, GiB = 1 << 20, 1 << 30
KEY = "omnibio_memory_retry_multiplier"


def _resources(reservation: int, limit: int) -> Resources:
    return Resources(
        cpu=1,
        memory_reservation=reservation,
        memory_limit=limit,
        gpu=0,
        disk=None,
        time_limit=None,
        max_interruptions=0,
    )


def _memory(resources: Resources) -> tuple[int, int]:
    return resources.memory_reservation, resources.memory_limit


@pytest.mark.parametrize(
    "asked,multiplier,cap,raised",
    [
        ((GiB, GiB), 2.0, 8 * GiB, (2 * GiB, 2 * GiB)),  # a batch service: limit = reservation
        ((GiB, 2 * GiB), 1.5, 8 * GiB, (1536 * MiB, 3 * GiB)),  # docker, memory_limit_multiplier
        ((GiB, 0), 2.0, 8 * GiB, (2 * GiB, 0)),  # a reservation alone: no limit appears
        ((3 * GiB, 3 * GiB), 2.0, 4 * GiB, (4 * GiB, 4 * GiB)),  # capped at the largest
        ((2 * GiB, 6 * GiB), 2.0, 4 * GiB, (4 * GiB, 6 * GiB)),  # above the cap: never lowered
        ((1001, 0), 1.5, 8 * GiB, (1502, 0)),  # rounded up to a whole byte
        ((0, 0), 2.0, 8 * GiB, (0, 0)),  # nothing asked: nothing to raise
    ],
)
def test_memory_raised(asked, multiplier, cap, raised):
    before = _resources(*asked)
    after = before.memory_raised(multiplier, cap)
    assert _memory(after) == raised
    assert after.cpu == before.cpu and after.time_limit == before.time_limit


def test_raised_memory_is_what_resources_json_says():
    raised = _resources(GiB, 2 * GiB).memory_raised(2.0, 8 * GiB)
    env = contract_env(
        tool_id="t", run_id_value="r", inputs_json_value="{}", resources=raised, result=None
    )
    resources = json.loads(env["RESOURCES_JSON"])
    assert (resources["memory"], resources["memory_reservation"]) == (4 * GiB, 2 * GiB)


@pytest.mark.parametrize("value,number", [(2, 2.0), (1.5, 1.5), ("3", 3.0), (" 1 ", 1.0)])
def test_multiplier_values(value, number):
    assert memory_multiplier(value) == number


@pytest.mark.parametrize(
    "value,problem",
    [
        ("twice", "is not a number"),
        (None, "is not a number"),
        (True, "is not a number"),
        ([2], "is not a number"),
        (0.5, "is not a number of at least 1"),
        (0, "is not a number of at least 1"),
        ("nan", "is not a number of at least 1"),
        ("inf", "is not a number of at least 1"),
    ],
)
def test_bad_multiplier_values(value, problem):
    with pytest.raises(ValueError, match=problem):
        memory_multiplier(value)


def test_config_key_is_off_by_default_and_names_itself_when_bad(monkeypatch):
    assert OmnibioSettings.load(_cfg(monkeypatch)).memory_retry_multiplier is None
    cfg = _cfg(monkeypatch, memory_retry_multiplier="1.5")
    assert OmnibioSettings.load(cfg).memory_retry_multiplier == 1.5
    for bad in ("0.5", "double"):
        cfg = _cfg(monkeypatch, memory_retry_multiplier=bad)
        with pytest.raises(ConfigError) as raised:
            OmnibioSettings.load(cfg)
        message = str(raised.value)
        assert "[omnibio] memory_retry_multiplier" in message and bad in message
        assert "\n" not in message


class FakeEngine:
    """What the lifecycle reads of an engine here: its name, limits and runtime keys."""

    section = "omnibio_fake"
    runtime_keys = ()
    memory_is_limit = True
    default_time_limit = None

    def __init__(self, largest: int) -> None:
        self.limits = {"cpu": 4, "mem_bytes": largest}


def _container(runtime_values, multiplier=None, largest=8 * GiB):
    container = OmnibioContainer.__new__(OmnibioContainer)
    container._engine = FakeEngine(largest)
    container._tracker = types.SimpleNamespace(failure_details=lambda handle, status: {})
    container._omnibio = types.SimpleNamespace(memory_retry_multiplier=multiplier)
    container.runtime_values = dict(runtime_values)
    container._interruptions = 0
    container._out_of_memory = container._raised_memory = None
    return container


def _end(container, status, logger):
    """An attempt that asked for what the container grants now ends with ``status``."""
    attempt = types.SimpleNamespace(resources=container.resources(), call="call-t")
    logger.setLevel(logging.INFO)
    container._conclude(logger, attempt, "h1", status, OpenJdProgress(logger), None)


OOM = Status(Phase.DONE, exit_code=137, oom=True, reason="OOMKilled")
KILLED = Status(Phase.DONE, exit_code=137, reason="exited")  # exit 137 alone: e.g. kill -9 $$


def test_a_typed_oom_raises_the_next_attempt_and_later_ones_keep_it(caplog):
    logger = logging.getLogger("test.memory_retry")
    container = _container({"memory_reservation": GiB}, multiplier=2.0, largest=3 * GiB)
    _end(container, OOM, logger)
    assert "oom" in container.failure_info
    container._raise_memory(logger)
    assert _memory(container.resources()) == (2 * GiB, 2 * GiB)
    raises = [r.getMessage() for r in caplog.records if "memory raised" in r.getMessage()]
    assert len(raises) == 1
    assert all(f in raises[0] for f in ("from: 1073741824", "to: 2147483648", "multiplier: 2.0"))
    assert "cap: 3221225472" in raises[0]
    _end(container, KILLED, logger)  # the raised attempt fails otherwise: the figure stays
    container._raise_memory(logger)
    assert _memory(container.resources()) == (2 * GiB, 2 * GiB)
    _end(container, OOM, logger)  # out of memory again: capped at the backend's largest
    container._raise_memory(logger)
    assert _memory(container.resources()) == (3 * GiB, 3 * GiB)
    _end(container, OOM, logger)  # and once there, retried as is, saying so
    container._raise_memory(logger)
    assert _memory(container.resources()) == (3 * GiB, 3 * GiB)
    assert "at the backend's largest memory" in caplog.text
    assert sum("memory raised" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    "runtime,multiplier,status",
    [
        ({}, 2.0, KILLED),  # exit 137 without a typed OOM
        ({}, None, OOM),  # the multiplier is off
        ({KEY: 1.0}, 2.0, OOM),  # the task turns it off
    ],
)
def test_nothing_changes_without_a_typed_oom_and_a_multiplier(runtime, multiplier, status, caplog):
    logger = logging.getLogger("test.memory_retry")
    container = _container({"memory_reservation": GiB, **runtime}, multiplier=multiplier)
    _end(container, status, logger)
    container._raise_memory(logger)
    assert _memory(container.resources()) == (GiB, GiB)
    assert "memory raised" not in caplog.text


def test_the_task_multiplier_wins_over_the_configured_one():
    logger = logging.getLogger("test.memory_retry")
    container = _container({"memory_reservation": GiB, KEY: 3.0}, multiplier=2.0)
    _end(container, OOM, logger)
    container._raise_memory(logger)
    assert _memory(container.resources()) == (3 * GiB, 3 * GiB)


def test_an_oom_without_runtime_memory_warns_and_retries_as_is(caplog):
    logger = logging.getLogger("test.memory_retry")
    container = _container({}, multiplier=2.0)
    _end(container, OOM, logger)
    container._raise_memory(logger)
    assert _memory(container.resources()) == (0, 0)
    assert "no runtime.memory" in caplog.text


def _process_runtime(monkeypatch, value):
    monkeypatch.setattr(TaskContainer, "process_runtime", lambda self, logger, ev: None)
    container = _container({})
    container.process_runtime(logging.getLogger("test.memory_retry"), {KEY: value})
    return container.runtime_values[KEY]


def test_runtime_key_is_read_and_a_bad_value_names_it(monkeypatch):
    assert _process_runtime(monkeypatch, Value.Float(2.0)) == 2.0
    assert _process_runtime(monkeypatch, Value.Int(3)) == 3.0
    for bad in (Value.Float(0.9), Value.String("double")):
        with pytest.raises(Error.RuntimeError) as raised:
            _process_runtime(monkeypatch, bad)
        message = str(raised.value)
        assert f"runtime.{KEY}" in message and "\n" not in message
    assert KEY in OmnibioContainer.runtime_keys  # recorded: miniwdl does not call it ignored
