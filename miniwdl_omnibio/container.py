"""OmnibioContainer: the lifecycle of a task attempt, written once for every engine.

describe the attempt -> reserve -> submit -> wait (tailing stderr, watching for termination) ->
exit code and failure_info -> verify results.json. Engines only translate the TaskAttempt.
"""

import atexit
import importlib
import logging
import os
import re
import shlex
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

from WDL import Error
from WDL._util import (
    NOTICE_LEVEL,
    VERBOSE_LEVEL,
    TailLogger,
    chmod_R_plus,
    parse_byte_size,
)
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config
from WDL.runtime.error import Interrupted, Terminated
from WDL.runtime.task_container import TaskContainer

from .attempt import (
    TAG_ATTEMPT,
    TAG_CALL,
    TAG_RUN,
    TAG_RUN_ID,
    TAG_TASK,
    Mount,
    Resources,
    TaskAttempt,
)
from .config import Settings, check_sections
from .contract import (
    TaskFacts,
    call_path,
    contract_env,
    inputs_json,
    result_uri,
    run_id,
    spill_large_values,
    workflow_run_name,
)
from .engines.base import Engine, Phase, Status
from .results import RESULT_CHECKS, ResultProblem, clear_stale, verify_result
from .runtime.uri import ResultUri, parse_result_uri

OPENJD_LINE = re.compile(r"^\s*openjd_(progress|status|fail)\s*:\s*(.*?)\s*$")
GiB = 1 << 30


@dataclass(frozen=True)
class OmnibioSettings:
    result_prefix: ResultUri | None
    result_check: str
    env_value_max_bytes: int

    @classmethod
    def load(cls, cfg: miniwdl_config.Loader) -> "OmnibioSettings":
        settings = Settings(cfg, "omnibio")
        prefix = settings.text("result_uri_prefix")
        try:
            parsed = parse_result_uri(prefix, prefix=True) if prefix else None
        except ValueError as exn:
            raise settings.fail("result_uri_prefix", str(exn)) from None
        return cls(
            result_prefix=parsed,
            result_check=settings.choice("result_check", RESULT_CHECKS),
            env_value_max_bytes=settings.integer("env_value_max_bytes", minimum=1024),
        )


def parse_disks(value: Any) -> int | None:
    """Bytes requested by runtime.disks: 100 (GiB), "100 GiB", "/mnt 10 GiB", "local-disk 100 SSD"."""
    total = 0
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, (int, float)):
            total += int(item * GiB)
            continue
        tokens = str(item).split()
        for i, token in enumerate(tokens):
            if re.fullmatch(r"\d+(\.\d+)?", token):
                unit = tokens[i + 1] if i + 1 < len(tokens) else ""
                try:
                    total += parse_byte_size(token + unit)
                except ValueError:
                    total += int(float(token) * GiB)  # "local-disk 100 SSD": GiB
                break
        else:
            raise Error.RuntimeError(f"invalid setting of runtime.disks: {item!r}")
    return total or None


def parse_duration(value: Any) -> int | None:
    """Seconds from runtime.omnibio_time_limit: 3600, "90m", "2h", "1d", "45s"."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
    if not match:
        raise Error.RuntimeError(
            f"invalid setting of runtime.omnibio_time_limit: {value!r} (use e.g. 3600, 90m, 2h)"
        )
    seconds = (
        float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    )
    return max(1, int(seconds))


class OpenJdProgress:
    """Surfaces Open Job Description lines a tool prints on stderr."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.fail_reason: str | None = None

    def line(self, text: str) -> None:
        match = OPENJD_LINE.match(text)
        if not match:
            return
        kind, value = match.groups()
        if kind == "progress":
            self.logger.info(_("task progress", percent=value))
        elif kind == "status":
            self.logger.log(NOTICE_LEVEL, _("task status", status=value))
        else:
            self.fail_reason = value
            self.logger.error(_("task reports failure", reason=value))


class OmnibioContainer(TaskContainer):
    """Shared base of the omnibio_* backends; subclasses name their engine."""

    engine_path: ClassVar[str]  # "module:EngineClass", imported at global_init
    extra: ClassVar[str | None] = None  # the pip extra its engine's SDK comes with
    _engine: ClassVar[Engine]
    _omnibio: ClassVar[OmnibioSettings]
    # runtime{} keys honoured on every engine (recorded so miniwdl does not call them ignored)
    runtime_keys: ClassVar[tuple[str, ...]] = (
        "omnibio_tool_id",
        "omnibio_time_limit",
        "omnibio_result_check",
        "disks",
    )

    @classmethod
    def global_init(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> None:
        engine_class = cls.engine_type()
        check_sections(cfg, ("omnibio", engine_class.section))
        cls._omnibio = OmnibioSettings.load(cfg)
        cls._engine = engine_class.start(cfg, logger)
        atexit.register(cls._engine.shutdown, logger)

    @classmethod
    def engine_type(cls) -> type[Engine]:
        """Import the engine only now: miniwdl loads every registered backend class, and a user
        of omnibio_docker need not have boto3, the Azure SDK or py-tes installed."""
        module, _sep, name = cls.engine_path.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as exn:
            hint = (
                f"; install it with pip install 'miniwdl-omnibio[{cls.extra}]'" if cls.extra else ""
            )
            raise Error.RuntimeError(
                f"{cls.__name__} cannot load its engine ({exn}){hint}"
            ) from None

    @classmethod
    def detect_resource_limits(
        cls, cfg: miniwdl_config.Loader, logger: logging.Logger
    ) -> dict[str, int]:
        return cls._engine.resource_limits()

    def __init__(self, cfg: miniwdl_config.Loader, run_id: str, host_dir: str) -> None:
        self.facts: TaskFacts | None = None  # set by task_plugin before the first attempt
        self._inputs_copied = False
        self._interruptions = 0
        super().__init__(cfg, run_id, host_dir)
        if self._engine.filesystem:
            # workers see the run directory in place: no virtualized container_dir
            self.container_dir = self._engine.filesystem.to_container(host_dir)

    # --- miniwdl hooks ---------------------------------------------------------------------

    def process_runtime(self, logger: logging.Logger, runtime_eval: dict[str, Any]) -> None:
        super().process_runtime(logger, runtime_eval)
        for key in self.runtime_keys + self._engine.runtime_keys:
            if key in runtime_eval:
                self.runtime_values[key] = runtime_eval[key].json
        if "disks" in self.runtime_values:
            self.runtime_values["disks"] = parse_disks(self.runtime_values["disks"])
        check = self.runtime_values.get("omnibio_result_check")
        if check is not None and check not in RESULT_CHECKS:
            raise Error.RuntimeError(
                f"invalid setting of runtime.omnibio_result_check: {check!r} (use one of {', '.join(RESULT_CHECKS)})"
            )
        if "omnibio_time_limit" in self.runtime_values:
            self.runtime_values["omnibio_time_limit"] = parse_duration(
                self.runtime_values["omnibio_time_limit"]
            )

    def add_paths(self, host_paths: Iterable[str]) -> None:
        fs = self._engine.filesystem
        if not fs:
            return super().add_paths(host_paths)
        # on a shared filesystem an input's container path is its place in the read-only view
        # (no symlinks: `find DIR` must see a directory)
        for host_path in host_paths:
            stripped = host_path.rstrip("/")
            if host_path in self.input_path_map or stripped in self.input_path_map:
                continue
            if not os.path.exists(stripped):
                raise Error.InputError("input path not found: " + host_path)
            fs.check_host_path(stripped, "input")
            container_path = fs.to_container(stripped, read_only=True) + (
                "/" if host_path.endswith("/") else ""
            )
            self.input_path_map[host_path] = container_path
            self.input_path_map_rev[container_path] = host_path

    def _input_host_path(self, container_path: str) -> tuple[bool, str | None]:
        fs = self._engine.filesystem
        if not fs:
            return super()._input_host_path(container_path)
        # a path in an input Directory, at any depth: the view maps back to the host one to one
        probe = container_path.rstrip("/")
        while probe not in ("", "/"):
            if probe in self.input_path_map_rev or probe + "/" in self.input_path_map_rev:
                return True, fs.to_host(container_path.rstrip("/")) + (
                    "/" if container_path.endswith("/") else ""
                )
            probe = os.path.dirname(probe)
        return False, None

    def copy_input_files(self, logger: logging.Logger) -> None:
        if self._engine.filesystem:
            logger.warning(
                "[file_io] copy_input_files ignored: inputs are used in place on the shared filesystem"
            )
            return
        super().copy_input_files(logger)
        self._inputs_copied = True

    def host_work_dir(self) -> str:
        if self._engine.filesystem:
            # the container runs in {container_dir}/work itself, so every attempt uses "work";
            # reset() moves a failed attempt's directory aside
            return os.path.join(self.host_dir, "work")
        return super().host_work_dir()

    def reset(self, logger: logging.Logger) -> None:
        if self._engine.filesystem and os.path.isdir(self.host_work_dir()):
            os.rename(
                self.host_work_dir(), os.path.join(self.host_dir, f"work.attempt{self.try_counter}")
            )
        self._inputs_copied = False
        super().reset(logger)

    def _run(self, logger: logging.Logger, terminating: Callable[[], bool], command: str) -> int:
        engine = self._engine
        attempt, result = self.describe(logger, command)
        logger.info(_("omnibio attempt", **attempt.describe()))
        if result and self._result_check() != "off":
            clear_stale(result)  # a stale result must not verify this attempt
        openjd = OpenJdProgress(logger)
        with ExitStack() as stack:
            stack.enter_context(engine.reserve(attempt, terminating, logger))
            if terminating():
                raise Terminated(quiet=True)
            handle = engine.submit(attempt, logger)
            stack.callback(engine.release, handle, logger)
            poll_stderr = stack.enter_context(
                TailLogger(
                    logger,
                    self.host_stderr_txt(),
                    callback=self._stderr_line(logger, openjd),
                    level=logging.CRITICAL,
                )
            )
            running = False
            while True:
                status = engine.wait(handle, engine.poll_seconds)
                poll_stderr()
                if terminating():
                    logger.warning(_("cancelling", handle=handle))
                    engine.cancel(handle, logger)
                    raise Terminated(quiet=not running)
                if status.phase is not Phase.QUEUED and not running:
                    stack.enter_context(self.task_running_context())
                    running = True
                if status.phase is Phase.DONE:
                    break
            poll_stderr()
            return self._conclude(logger, attempt, handle, status, openjd, result)

    # --- describing the attempt ------------------------------------------------------------

    def describe(
        self, logger: logging.Logger, command: str
    ) -> tuple[TaskAttempt, ResultUri | None]:
        """Build the backend-neutral TaskAttempt (and its result URI) from miniwdl's state."""
        if self.facts is None:
            raise Error.RuntimeError(
                "miniwdl_omnibio's task plugin (miniwdl_omnibio.task_plugin:describe_task) did not run; "
                "check [plugins] enable_patterns / disable_patterns"
            )
        facts = self.facts
        with open(os.path.join(self.host_dir, "command"), "w") as outfile:
            outfile.write(command)
        workflow_run = workflow_run_name(self.host_dir, facts.run_id_stack)
        call = call_path(facts.run_id_stack)
        rid = run_id(workflow_run, call, self.try_counter)
        result = result_uri(self._omnibio.result_prefix, workflow_run, call)
        resources = self.resources()

        fs = self._engine.filesystem
        mounts = self._shared_mounts() if fs else self._bind_mounts(logger)
        container_result = result
        if result and result.scheme == "file":
            result_dir = os.path.dirname(result.key)
            os.makedirs(result_dir, exist_ok=True)
            if fs:
                container_result = ResultUri("file", "", "", fs.to_container(result.key))
            else:
                mounts.append(Mount(result_dir, result_dir, False))

        contract = contract_env(
            tool_id=str(self.runtime_values.get("omnibio_tool_id") or facts.name),
            run_id_value=rid,
            inputs_json_value=inputs_json(facts.inputs, self.input_path_map),
            resources=resources,
            result=container_result,
        )
        spill_host = os.path.join(self.host_dir, "omnibio")
        spill_container = os.path.join(self.container_dir, "omnibio")
        contract, spilled = spill_large_values(
            contract, self._omnibio.env_value_max_bytes, spill_host, spill_container
        )
        if spilled:
            logger.info(_("contract values passed as files", names=spilled, dir=spill_container))
            if not fs:
                mounts.append(Mount(spill_host, spill_container, True))
        env = dict(self.runtime_values.get("env", {}))
        env.update(contract)

        attempt = TaskAttempt(
            run_id=rid,
            call=call,
            workflow_run=workflow_run,
            attempt=self.try_counter,
            image=self.runtime_values.get("docker")
            or self.cfg.get_dict("task_runtime", "defaults").get("docker", "ubuntu:22.04"),
            argv=self._argv(),
            workdir=os.path.join(self.container_dir, "work"),
            env=env,
            mounts=tuple(mounts),
            resources=resources,
            tags={
                TAG_RUN: workflow_run,
                TAG_CALL: call,
                TAG_TASK: facts.name,
                TAG_ATTEMPT: str(self.try_counter),
                TAG_RUN_ID: rid,
            },
            stdout_path=self.host_stdout_txt(),
            stderr_path=self.host_stderr_txt(),
            host_dir=self.host_dir,
            runtime={
                k: self.runtime_values[k]
                for k in self._engine.runtime_keys
                if k in self.runtime_values
            },
            user=f"{os.geteuid()}:{os.getegid()}"
            if self.cfg["task_runtime"].get_bool("as_user")
            else None,
            privileged=bool(self.runtime_values.get("privileged", False)),
            interruptions=self._interruptions,
        )
        return attempt, result

    def resources(self) -> Resources:
        values = self.runtime_values
        return Resources(
            cpu=int(values.get("cpu", 1)),
            memory_reservation=int(values.get("memory_reservation", 0)),
            memory_limit=int(values.get("memory_limit", 0)),
            gpu=1 if values.get("gpu") else 0,
            disk=values.get("disks"),
            time_limit=values.get("omnibio_time_limit") or self._engine.default_time_limit,
            max_interruptions=int(values.get("preemptible", 0)),
        )

    def _container_stream(self, host_path: str, name: str) -> str:
        fs = self._engine.filesystem
        return fs.to_container(host_path) if fs else os.path.join(self.container_dir, name)

    def _argv(self) -> tuple[str, ...]:
        shell = self.cfg.get("task_runtime", "command_shell")
        stdout = shlex.quote(self._container_stream(self.host_stdout_txt(), "stdout.txt"))
        stderr = shlex.quote(self._container_stream(self.host_stderr_txt(), "stderr.txt"))
        script = f"{shell} {shlex.quote(os.path.join(self.container_dir, 'command'))} >> {stdout} 2>> {stderr}"
        if self._chown_needed():
            # leave outputs owned by the invoking user, not by the image's root
            uid, gid = os.geteuid(), os.getegid()
            script = f'{script}; rc=$?; if [ "$(id -u)" = 0 ]; then chown -R {uid}:{gid} . {stdout} {stderr} 2>/dev/null; fi; exit $rc'
        return ("/bin/sh", "-c", script)

    def _chown_needed(self) -> bool:
        return (
            self.cfg.get_bool("file_io", "chown")
            and not self.cfg["task_runtime"].get_bool("as_user")
            and os.geteuid() != 0
        )

    def _bind_mounts(self, logger: logging.Logger) -> list[Mount]:
        """Per-file read-only binds of the inputs, in place; read-write work dir and streams."""
        mounts = []
        if not self._inputs_copied:
            for host_path, container_path in self.input_path_map.items():
                mount_point = self.host_work_path(container_path)
                if not os.path.exists(mount_point.rstrip("/")):
                    # created by us, not by dockerd as root
                    self.touch_mount_point(mount_point)
                mounts.append(Mount(host_path.rstrip("/"), container_path.rstrip("/"), True))
        command = os.path.join(self.host_dir, "command")
        mounts.append(Mount(command, os.path.join(self.container_dir, "command"), True))
        for host_path, name in (
            (self.host_stdout_txt(), "stdout.txt"),
            (self.host_stderr_txt(), "stderr.txt"),
        ):
            if not os.path.exists(host_path):
                self.touch_mount_point(host_path)
            mounts.append(Mount(host_path, os.path.join(self.container_dir, name), False))
        mounts.append(Mount(self.host_work_dir(), os.path.join(self.container_dir, "work"), False))
        # group rw lets images that run as another uid use the mounts (swarm backend does the same)
        for path in (command, self.host_stdout_txt(), self.host_stderr_txt(), self.host_work_dir()):
            chmod_R_plus(path, file_bits=0o660, dir_bits=0o770)
        return mounts

    def _shared_mounts(self) -> list[Mount]:
        """The shared filesystem, read-write, and its read-only view (where inputs are)."""
        fs = self._engine.filesystem
        assert fs
        for stream in (self.host_stdout_txt(), self.host_stderr_txt()):
            open(stream, "a").close()
        chmod_R_plus(self.host_dir, file_bits=0o660, dir_bits=0o770)
        mounts = [Mount(fs.host_root, fs.container_root, False)]
        if fs.readonly_root:
            mounts.append(Mount(fs.host_root, fs.readonly_root, True))
        return mounts

    # --- while running ---------------------------------------------------------------------

    def _stderr_line(self, logger: logging.Logger, openjd: OpenJdProgress) -> Callable[[str], None]:
        stderr_logger = logger.getChild("stderr")
        verbose = logger.isEnabledFor(VERBOSE_LEVEL)

        def line(text: str) -> None:
            openjd.line(text)
            if self.stderr_callback:
                self.stderr_callback(text)
            elif verbose:
                stderr_logger.log(VERBOSE_LEVEL, text.rstrip())

        return line

    # --- after the container exits ---------------------------------------------------------

    def _conclude(
        self,
        logger: logging.Logger,
        attempt: TaskAttempt,
        handle: str,
        status: Status,
        openjd: OpenJdProgress,
        result: ResultUri | None,
    ) -> int:
        if status.error:
            logger.error(_("task could not run", handle=handle, error=status.error))
            raise Error.RuntimeError(status.error)
        if status.interrupted:
            logger.warning(_("task interrupted", handle=handle, reason=status.reason))
            self._interruptions += 1
            raise Interrupted(status.reason or "interrupted by the execution engine")
        if status.exit_code is None:
            raise Error.RuntimeError(
                f"{self._engine.section} reported {handle} finished without an exit code ({status.reason})"
            )
        exit_code = status.exit_code
        logger.log(
            NOTICE_LEVEL,
            _("task exit", handle=handle, exit_code=exit_code, reason=status.reason or None),
        )
        if not self.success_exit_code(exit_code):
            info: dict[str, Any] = {
                "engine": self._engine.section,
                "handle": handle,
                "exit_code": exit_code,
            }
            if status.reason:
                info["reason"] = status.reason
            if status.oom:
                limit = attempt.resources.memory_limit or attempt.resources.memory_reservation
                info["oom"] = (
                    f"killed for exceeding the memory limit ({limit} bytes); raise runtime.memory"
                )
                logger.error(_("task ran out of memory", memory_limit=limit))
            if openjd.fail_reason:
                info["openjd_fail"] = openjd.fail_reason
            info.update(status.details)
            info.update(self._engine.failure_details(handle, attempt, status))
            self.failure_info = info
        elif result and self._result_check() != "off":
            self._verify_result(logger, attempt, result)
        return exit_code

    def _result_check(self) -> str:
        """fail | warn | off: runtime.omnibio_result_check, else [omnibio] result_check; off for
        the tasks miniwdl itself runs to download URI inputs (run ids download-...)."""
        if self.run_id.startswith("download-"):
            return "off"
        return str(self.runtime_values.get("omnibio_result_check") or self._omnibio.result_check)

    def _verify_result(
        self, logger: logging.Logger, attempt: TaskAttempt, result: ResultUri
    ) -> None:
        """Read results.json back: a problem fails the task (or warns, per result_check)."""
        try:
            document = verify_result(result, attempt.run_id, self.host_work_dir())
        except ResultProblem as problem:
            if self._result_check() == "warn":
                logger.warning(str(problem))
                return
            self.failure_info = {"result": str(problem)}
            raise Error.RuntimeError(str(problem)) from None
        logger.log(NOTICE_LEVEL, _("result verified", uri=str(result), ok=document.get("ok", True)))
