"""OmnibioContainer: miniwdl's TaskContainer hooks and the run loop, written once for every engine.

One attempt: wait before a retry -> describe it (pure) -> prepare the host directory -> reserve
-> submit through the shared tracker -> wait, tailing stderr and watching for termination ->
exit code, failure_info, time limit, OOM, interruption -> verify results.json. Where files live
is the placement's business (placement_local / placement_shared); engines only translate.
"""

import atexit
import gc
import importlib
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from WDL import Error
from WDL._util import NOTICE_LEVEL, VERBOSE_LEVEL, TailLogger
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config
from WDL.runtime.error import Interrupted, Terminated
from WDL.runtime.task_container import TaskContainer

from . import plugin_lookups
from .attempt import (
    TAG_ATTEMPT,
    TAG_CALL,
    TAG_RUN,
    TAG_RUN_ID,
    TAG_TASK,
    Resources,
    TaskAttempt,
    memory_multiplier,
)
from .config import OmnibioSettings, check_sections
from .contract import (
    TaskFacts,
    call_path,
    contract_env,
    inputs_json,
    path_mapping_rules,
    result_uri,
    run_id,
    secret_env,
    spill_large_values,
    workflow_run_dir,
    workflow_run_name,
)
from .engines.base import Engine, Phase, Status
from .placement import Placement
from .placement.local import LocalPlacement
from .placement.shared import SharedPlacement
from .progress import OpenJdProgress
from .report import write_report
from .results import RESULT_CHECKS, ResultProblem, clear_stale, container_to_host, verify_result
from .runtime.contract import CONTRACT_VARIABLES, FILE_SUFFIX
from .runtime.provenance import SIGNING_KEY_VARIABLE
from .runtime.uri import ResultUri
from .task_values import parse_disks, parse_duration, retry_delay
from .trace import Progress, Traces, attempt_row, ending
from .tracker import Tracker

ROUND_SECONDS = 1.0  # the run loop's longest wait: Ctrl-C and live stderr respond within it


@dataclass(frozen=True)
class AttemptPlan:
    """A described attempt and the files its host directory needs before it is submitted."""

    attempt: TaskAttempt
    result: ResultUri | None
    files: dict[str, str] = field(default_factory=dict)  # host path -> text to write
    directories: tuple[str, ...] = ()  # host directories to create


class OmnibioContainer(TaskContainer):
    """Shared base of the omnibio_* backends; subclasses name their engine."""

    engine_path: ClassVar[str]  # "module:EngineClass", imported at global_init
    extra: ClassVar[str | None] = None  # the pip extra its engine's SDK comes with
    _engine: ClassVar[Engine[Any]]
    _tracker: ClassVar[Tracker]
    _omnibio: ClassVar[OmnibioSettings]
    _traces: ClassVar[Traces]
    _warned: ClassVar[set[str]] = set()  # what is not enforced or honoured, warned about once
    # runtime{} keys honoured on every engine (recorded so miniwdl does not call them ignored)
    runtime_keys: ClassVar[tuple[str, ...]] = (
        "omnibio_tool_id",
        "omnibio_time_limit",
        "omnibio_result_check",
        "omnibio_secrets",
        "omnibio_memory_retry_multiplier",
        "disks",
    )

    @classmethod
    def global_init(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> None:
        plugin_lookups.remember()
        engine_class = cls.engine_type()
        check_sections(cfg, ("omnibio", engine_class.section))
        cls._omnibio = OmnibioSettings.load(cfg)
        cls._engine = engine_class.start(cfg, logger)
        cls._traces = Traces()
        # the run's lines go to the top workflow's logger (wdl.w:name), not to the logger of the
        # task that came first (wdl.w:name.w:call-sub.t:call-x); under --task, the task's own
        run_logger = logging.getLogger(".".join(logger.name.split(".")[:2]))
        # After the traces (LIFO), the heap is frozen: the interpreter's finalization then leaves
        # it to the process's exit instead of freeing it object by object, cyclic GC passes
        # included, which took 70 to 120 ms of every run (docs/docker.md, "Speed"). Python does
        # not promise finalizers at exit; logging.shutdown still flushes the log files after it.
        atexit.register(gc.freeze)
        atexit.register(cls._finish_traces, run_logger)  # after the tracker's shutdown (LIFO)
        cls._tracker = Tracker(cls._engine, logger, cls._omnibio.unlisted_grace)
        atexit.register(cls._tracker.shutdown)
        if cls._omnibio.progress_seconds:
            tracker, traces = cls._tracker, cls._traces
            progress = Progress(
                run_logger, cls._omnibio.progress_seconds, tracker.counts, traces.endings
            )
            progress.start()

    @classmethod
    def _finish_traces(cls, logger: logging.Logger) -> None:
        """At exit: bring each trace's JSON up to date, and write report.html where
        [omnibio] report asks for it."""
        for run_dir in cls._traces.flush():
            if cls._omnibio.report:
                write_report(run_dir, cls._omnibio.prices, logger)

    @classmethod
    def engine_type(cls) -> type[Engine[Any]]:
        """Import the engine only now: miniwdl loads every registered backend class, and a user
        of omnibio_docker need not have boto3, the Azure SDK or py-tes installed."""
        module, _sep, name = cls.engine_path.partition(":")
        try:
            engine: type[Engine[Any]] = getattr(importlib.import_module(module), name)
        except ImportError as exn:
            hint = (
                f"; install it with pip install 'miniwdl-omnibio[{cls.extra}]'" if cls.extra else ""
            )
            raise Error.RuntimeError(
                f"{cls.__name__} cannot load its engine ({exn}){hint}"
            ) from None
        return engine

    @classmethod
    def detect_resource_limits(
        cls, cfg: miniwdl_config.Loader, logger: logging.Logger
    ) -> dict[str, int]:
        return cls._engine.limits

    def __init__(self, cfg: miniwdl_config.Loader, run_id: str, host_dir: str) -> None:
        self.facts: TaskFacts | None = None  # set by task_plugin before the first attempt
        self._interruptions = 0  # attempts the engine interrupted so far
        self._interrupted_last = False
        self._verified: bool | None = None  # results.json verified the attempt; None: unchecked
        self._out_of_memory: Resources | None = None  # the last attempt's, if it ran out of memory
        self._raised_memory: Resources | None = None  # what later attempts ask for, once raised
        fs = self._engine.filesystem
        self._placement: Placement = SharedPlacement(self, fs) if fs else LocalPlacement(self)
        super().__init__(cfg, run_id, host_dir)
        self.container_dir = self._placement.container_dir()

    # --- miniwdl hooks: where files are ------------------------------------------------------

    def add_paths(self, host_paths: Iterable[str]) -> None:
        self._placement.add_paths(host_paths)

    def _input_host_path(self, container_path: str) -> tuple[bool, str | None]:
        return self._placement.input_host_path(container_path)

    def copy_input_files(self, logger: logging.Logger) -> None:
        self._placement.copy_input_files(logger)

    def host_work_dir(self) -> str:
        return self._placement.host_work_dir()

    def reset(self, logger: logging.Logger) -> None:
        self._placement.reset(logger)
        super().reset(logger)

    # --- miniwdl hooks: runtime values -------------------------------------------------------

    def process_runtime(self, logger: logging.Logger, runtime_eval: dict[str, Any]) -> None:
        super().process_runtime(logger, runtime_eval)
        for key in self.runtime_keys + self._engine.runtime_keys:
            if key in runtime_eval:
                self.runtime_values[key] = runtime_eval[key].json
        if "disks" in self.runtime_values:
            self.runtime_values["disks"] = self._disks(logger, self.runtime_values["disks"])
        check = self.runtime_values.get("omnibio_result_check")
        if check is not None and check not in RESULT_CHECKS:
            raise Error.RuntimeError(
                f"invalid setting of runtime.omnibio_result_check: {check!r} "
                f"(use one of {', '.join(RESULT_CHECKS)})"
            )
        if "omnibio_time_limit" in self.runtime_values:
            limit = parse_duration(self.runtime_values["omnibio_time_limit"])
            self.runtime_values["omnibio_time_limit"] = limit
        key = "omnibio_memory_retry_multiplier"
        if key in self.runtime_values:
            try:
                self.runtime_values[key] = memory_multiplier(self.runtime_values[key])
            except ValueError as exn:
                raise Error.RuntimeError(
                    f"invalid setting of runtime.{key}: {exn} (use e.g. 2.0)"
                ) from None

    def _disks(self, logger: logging.Logger, value: Any) -> int | None:
        """runtime.disks in bytes, or None (a value it cannot read). No engine allocates disks, so
        the value is named in a warning once, and the task goes on."""
        try:
            size: int | None = parse_disks(value)
        except ValueError:
            size = None
        self._warn_once(
            logger,
            f"runtime.disks = {json.dumps(value)} is not enforced by {self._engine.section}",
        )
        return size

    def _warn_once(self, logger: logging.Logger, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            logger.warning(message)

    # --- the run loop ------------------------------------------------------------------------

    def _run(self, logger: logging.Logger, terminating: Callable[[], bool], command: str) -> int:
        self._wait_before_retry(logger, terminating)
        self._raise_memory(logger)
        plan = self.describe(command)
        self.prepare_host_dir(logger, plan)
        attempt, result = plan.attempt, plan.result
        logger.info(_("omnibio attempt", **attempt.describe()))
        if result and self._result_check() != "off":
            clear_stale(result)  # a stale result must not verify this attempt
        engine, tracker = self._engine, self._tracker
        request = engine.translate(attempt)
        for note in getattr(request, "notes", ()):
            self._warn_once(logger, note)
        openjd = OpenJdProgress(logger)
        self._verified = None
        with ExitStack() as stack:
            stack.enter_context(engine.reserve(attempt, terminating, logger))
            if terminating():
                raise Terminated(quiet=True)
            try:
                handle = tracker.submit(attempt, request, logger, terminating)
            except Exception as exn:
                self._trace(logger, attempt, None, exn)
                raise
            stack.callback(tracker.release, handle, logger)
            # before release: the tracker still holds the attempt's record
            stack.push(lambda _type, raised, _tb: self._trace(logger, attempt, handle, raised))
            poll_stderr = stack.enter_context(
                TailLogger(
                    logger,
                    self.host_stderr_txt(),
                    callback=self._stderr_line(logger, openjd),
                    level=logging.CRITICAL,  # always read: openjd lines count without --verbose
                )
            )
            running = False
            while True:
                status = tracker.wait(handle, min(ROUND_SECONDS, engine.poll_seconds))
                poll_stderr()
                if terminating():
                    tracker.cancel(handle, logger)
                    raise Terminated(quiet=not running)
                if status.phase is not Phase.QUEUED and not running:
                    stack.enter_context(self.task_running_context())
                    running = True
                if status.phase is Phase.DONE:
                    break
            tracker.collect(handle, status, logger)
            poll_stderr()
            return self._conclude(logger, attempt, handle, status, openjd, result)

    def _trace(
        self,
        logger: logging.Logger,
        attempt: TaskAttempt,
        handle: str | None,
        raised: BaseException | None,
    ) -> None:
        """The attempt's row in the run's trace; a trace that cannot be written is a warning."""
        if self._is_download() or self.facts is None:
            return  # miniwdl's own download tasks: not part of the run's work
        outcome = self._tracker.outcome(handle) if handle else None
        now = time.time()
        status = outcome.status if outcome else None
        exit_code = status.exit_code if status else None
        exit_ok = exit_code is not None and self.success_exit_code(exit_code)
        times = (outcome.submitted, outcome.started, outcome.ended or now) if outcome else None
        row = attempt_row(
            attempt,
            task=self.facts.name,
            backend=self._engine.section,
            handle=handle,
            times=times or (now, None, now),  # not submitted: the service refused it
            status=status,
            end=ending(status, raised, exit_ok),
            reason=str(raised).strip()[:300] if raised else None,
            verified=self._verified,
        )
        try:
            self._traces.add(workflow_run_dir(self.host_dir, self.facts.run_id_stack), row)
        except OSError as exn:
            self._warn_once(logger, f"cannot write the run's trace: {exn}")

    def _wait_before_retry(self, logger: logging.Logger, terminating: Callable[[], bool]) -> None:
        """A failed attempt is retried after retry_wait (doubling), so a passing fault is
        outlived; an interrupted one at once."""
        if self._interrupted_last:
            return
        retries = self.try_counter - 1 - self._interruptions
        settings = self._omnibio
        seconds = retry_delay(retries, settings.retry_wait, settings.retry_wait_max)
        if seconds <= 0:
            return
        logger.info(_("waiting before retry", seconds=seconds, retry=retries))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if terminating():
                raise Terminated(quiet=True)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _raise_memory(self, logger: logging.Logger) -> None:
        """After an attempt the service reported out of memory, and with a memory retry
        multiplier set: this and later attempts ask for its memory times the multiplier, at most
        the backend's largest (miniwdl's retry loop counts the attempt against maxRetries)."""
        oom, self._out_of_memory = self._out_of_memory, None
        multiplier = self.runtime_values.get(
            "omnibio_memory_retry_multiplier", self._omnibio.memory_retry_multiplier
        )
        if oom is None or multiplier is None or multiplier == 1:
            return
        cap = self._engine.limits["mem_bytes"]
        if not oom.memory:
            logger.warning(
                _("out of memory with no runtime.memory: nothing to raise", multiplier=multiplier)
            )
            return
        raised = oom.memory_raised(multiplier, cap)
        if raised.memory == oom.memory:
            logger.warning(
                _("out of memory at the backend's largest memory: retried as is", cap=cap)
            )
            return
        self._raised_memory = raised
        logger.log(
            NOTICE_LEVEL,
            _(
                "memory raised after out of memory",
                **{"from": oom.memory, "to": raised.memory},
                multiplier=multiplier,
                cap=cap,
            ),
        )

    def _stderr_line(self, logger: logging.Logger, openjd: OpenJdProgress) -> Callable[[str], None]:
        """Each stderr line: openjd lines always; the line itself only with verbose logging, to
        stderr_callback if a plugin set one, else the task logger's 'stderr' child (as miniwdl)."""
        stderr_logger = logger.getChild("stderr")
        verbose = logger.isEnabledFor(VERBOSE_LEVEL)

        def line(text: str) -> None:
            openjd.line(text)
            if not verbose:
                return
            if self.stderr_callback:
                self.stderr_callback(text)
            else:
                stderr_logger.log(VERBOSE_LEVEL, text.rstrip())

        return line

    # --- describing the attempt --------------------------------------------------------------

    def describe(self, command: str) -> AttemptPlan:
        """The backend-neutral TaskAttempt from miniwdl's state. Pure: writes nothing."""
        if self.facts is None:
            raise Error.RuntimeError(
                "miniwdl_omnibio's task plugin (miniwdl_omnibio.task_plugin:describe_task) did "
                "not run; check [plugins] enable_patterns / disable_patterns"
            )
        facts, placement = self.facts, self._placement
        workflow_run = workflow_run_name(self.host_dir, facts.run_id_stack)
        call = call_path(facts.run_id_stack)
        rid = run_id(workflow_run, call, self.try_counter)
        result = result_uri(self._omnibio.result_prefix, workflow_run, call)
        resources = self.resources()
        files = {os.path.join(self.host_dir, "command"): command}
        directories: list[str] = []
        writable: list[str] = []
        container_result = result
        if result and result.scheme == "file":
            result_dir = os.path.dirname(result.key)
            directories.append(result_dir)
            if self._engine.filesystem:
                container_result = ResultUri("file", "", "", placement.to_container(result.key))
            else:
                writable.append(result_dir)
        secrets = [str(name) for name in self.runtime_values.get("omnibio_secrets", [])]
        contract = contract_env(
            tool_id=str(self.runtime_values.get("omnibio_tool_id") or facts.name),
            run_id_value=rid,
            inputs_json_value=inputs_json(facts.inputs, self.input_path_map),
            resources=resources,
            result=container_result,
            result_max_bytes=self._omnibio.result_max_bytes,
            path_mapping=path_mapping_rules(placement.mounts(writable, [])),
            secret_names=secrets,
        )
        spill_host = os.path.join(self.host_dir, "omnibio")
        contract, spilled = spill_large_values(
            contract, self._omnibio.env_value_max_bytes, placement.to_container(spill_host)
        )
        files.update({os.path.join(spill_host, name): value for name, value in spilled.items()})
        # the contract wins a name clash, in either form (NAME or NAME_FILE): a task must see one
        reserved = {n for name in CONTRACT_VARIABLES for n in (name, name + FILE_SUFFIX)}
        env = {k: v for k, v in self.runtime_values.get("env", {}).items() if k not in reserved}
        env.update(contract)
        env.update(self._launcher_secrets(secrets))
        default_image = self.cfg.get_dict("task_runtime", "defaults").get("docker", "ubuntu:22.04")
        as_user = self.cfg["task_runtime"].get_bool("as_user")
        engine_keys = self._engine.runtime_keys
        attempt = TaskAttempt(
            run_id=rid,
            call=call,
            workflow_run=workflow_run,
            attempt=self.try_counter,
            image=self.runtime_values.get("docker") or default_image,
            argv=self._argv(),
            workdir=os.path.join(self.container_dir, "work"),
            env=env,
            mounts=placement.mounts(writable, [spill_host] if spilled else []),
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
            runtime={k: v for k, v in self.runtime_values.items() if k in engine_keys},
            user=f"{os.geteuid()}:{os.getegid()}" if as_user else None,
            privileged=bool(self.runtime_values.get("privileged", False)),
            interruptions=self._interruptions,
        )
        return AttemptPlan(attempt, result, files, tuple(directories))

    @staticmethod
    def _launcher_secrets(names: list[str]) -> dict[str, str]:
        """Values from the launcher's environment the task receives but no log shows: the
        variables runtime.omnibio_secrets names, and the result signing key when set."""
        try:
            values = secret_env(names, os.environ)
        except ValueError as exn:
            raise Error.InputError(str(exn)) from None
        if os.environ.get(SIGNING_KEY_VARIABLE):
            values[SIGNING_KEY_VARIABLE] = os.environ[SIGNING_KEY_VARIABLE]
        return values

    def prepare_host_dir(self, logger: logging.Logger, plan: AttemptPlan) -> None:
        """Write what the plan needs on the host: command, spilled values, mount points."""
        for directory in plan.directories:
            os.makedirs(directory, exist_ok=True)
        for path, text in plan.files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as outfile:
                outfile.write(text)
        spilled = [os.path.basename(p) for p in plan.files if os.path.basename(p) != "command"]
        if spilled:
            logger.info(_("contract values passed as files", names=sorted(spilled)))
        self._placement.prepare(logger)

    def resources(self) -> Resources:
        engine = self._engine
        granted = Resources.granted(
            self.runtime_values,
            memory_is_limit=engine.memory_is_limit,
            time_limit=self.runtime_values.get("omnibio_time_limit") or engine.default_time_limit,
            disk=self.runtime_values.get("disks"),
        )
        raised = self._raised_memory
        if raised is None:
            return granted
        return replace(
            granted,
            memory_reservation=raised.memory_reservation,
            memory_limit=raised.memory_limit,
        )

    def _argv(self) -> tuple[str, ...]:
        shell = self.cfg.get("task_runtime", "command_shell")
        placement = self._placement
        stdout = shlex.quote(placement.to_container(self.host_stdout_txt()))
        stderr = shlex.quote(placement.to_container(self.host_stderr_txt()))
        command = shlex.quote(placement.to_container(os.path.join(self.host_dir, "command")))
        script = f"{shell} {command} >> {stdout} 2>> {stderr}"
        if self._chown_needed():
            # leave outputs owned by the invoking user, not by the image's root
            uid, gid = os.geteuid(), os.getegid()
            script += (
                f'; rc=$?; if [ "$(id -u)" = 0 ]; then chown -R {uid}:{gid} . {stdout} {stderr}'
                " 2>/dev/null; fi; exit $rc"
            )
        return ("/bin/sh", "-c", script)

    def _chown_needed(self) -> bool:
        return (
            self.cfg.get_bool("file_io", "chown")
            and not self.cfg["task_runtime"].get_bool("as_user")
            and os.geteuid() != 0
        )

    # --- after the container exits -----------------------------------------------------------

    def _conclude(
        self,
        logger: logging.Logger,
        attempt: TaskAttempt,
        handle: str,
        status: Status,
        openjd: OpenJdProgress,
        result: ResultUri | None,
    ) -> int:
        section = self._engine.section
        self._interrupted_last = status.interrupted
        if status.interrupted:
            logger.warning(_("task interrupted", handle=handle, reason=status.reason))
            self._interruptions += 1
            raise Interrupted(status.reason or f"interrupted by {section}")
        if status.timed_out:
            problem = self._time_limit_problem(attempt, handle)
            self.failure_info = {"engine": section, "handle": handle, "time_limit": problem}
            logger.error(_("task exceeded its time limit", handle=handle, reason=status.reason))
            raise Error.RuntimeError(problem)
        if status.error:
            logger.error(_("task could not run", handle=handle, error=status.error))
            raise Error.RuntimeError(status.error)
        if status.exit_code is None:
            raise Error.RuntimeError(
                f"{section} reported {handle} finished without an exit code ({status.reason})"
            )
        exit_code = status.exit_code
        logger.log(
            NOTICE_LEVEL,
            _("task exit", handle=handle, exit_code=exit_code, reason=status.reason or None),
        )
        if not self.success_exit_code(exit_code):
            info: dict[str, Any] = {"engine": section, "handle": handle, "exit_code": exit_code}
            if status.reason:
                info["reason"] = status.reason
            if status.oom:
                self._out_of_memory = attempt.resources
                limit = attempt.resources.memory
                info["oom"] = (
                    f"killed for exceeding the memory limit ({limit} bytes); raise runtime.memory"
                )
                logger.error(_("task ran out of memory", memory_limit=limit))
            if openjd.fail_reason:
                info["openjd_fail"] = openjd.fail_reason
            info.update(status.details)
            info.update(self._tracker.failure_details(handle, status))
            self.failure_info = info
        elif result and self._result_check() != "off":
            self._verify_result(logger, attempt, result)
        return exit_code

    def _time_limit_problem(self, attempt: TaskAttempt, handle: str) -> str:
        """One line naming the limit, its seconds and where it was set."""
        where = (
            "runtime.omnibio_time_limit"
            if self.runtime_values.get("omnibio_time_limit")
            else f"[{self._engine.section}] default_time_limit"
        )
        return (
            f"task {attempt.call} ({handle}) exceeded its time limit of "
            f"{attempt.resources.time_limit} s ({where}) and was stopped"
        )

    def _result_check(self) -> str:
        """fail | warn | off: runtime.omnibio_result_check, else [omnibio] result_check; off for
        the tasks miniwdl itself runs to download URI inputs (run ids download-...)."""
        if self._is_download():
            return "off"
        return str(self.runtime_values.get("omnibio_result_check") or self._omnibio.result_check)

    def _is_download(self) -> bool:
        """One of the tasks miniwdl itself runs to download URI inputs (run ids download-...)."""
        return self.run_id.startswith("download-")

    def _verify_result(
        self, logger: logging.Logger, attempt: TaskAttempt, result: ResultUri
    ) -> None:
        """Read results.json back: a problem fails the task (or warns, per result_check)."""
        try:
            document = verify_result(
                result,
                attempt.run_id,
                self.host_work_dir(),
                max_bytes=self._omnibio.result_max_bytes,
                to_host=container_to_host(attempt.mounts),
            )
        except ResultProblem as problem:
            self._verified = False
            if self._result_check() == "warn":
                logger.warning(str(problem))
                return
            self.failure_info = {"result": str(problem)}
            raise Error.RuntimeError(str(problem)) from None
        self._verified = True
        logger.log(NOTICE_LEVEL, _("result verified", uri=str(result), ok=document.get("ok", True)))
