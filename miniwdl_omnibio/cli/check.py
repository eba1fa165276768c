"""``python -m miniwdl_omnibio check --cfg my.cfg``: what a first run would otherwise discover.

For the configured backend: the configuration, the engine's own start-up checks (endpoint,
credentials, queue / pool / service-info: whatever its ``start()`` checks), the shared filesystem
and a file:// result prefix on this host, then a probe task run by miniwdl that proves the
shared filesystem visible from a task and the result prefix writable from a task and readable
here. One line per check, ✓ or ✗ with the fix in the same line. It uses only ``Engine.start``,
``filesystem`` and ``shutdown``, so it covers every engine without knowing it.
"""

import importlib.metadata
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import IO, Any

from WDL.runtime import config as miniwdl_config

from ..config import check_sections
from ..container import OmnibioContainer, OmnibioSettings
from ..engines.base import Engine
from ..placement.sharedfs import SharedFilesystem
from ..runtime.store import delete_result, download_result
from .probe import MARKER, ProbeRun, run_probe

# what each engine's start() proves, for its line; an engine not listed gets the generic words
STARTS = {
    "omnibio_docker": "Docker engine answers",
    "omnibio_awsbatch": "endpoint, credentials, job queues",
    "omnibio_azurebatch": "endpoint, credentials, pool",
    "omnibio_tes": "endpoint, credentials, service-info",
    "omnibio_slurm": "Slurm commands, controller, partition, account",
}
# environment variables whose values never reach a printed line
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CONNECTION_STRING", "CREDENTIAL")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # ✓: what was found; ✗: the cause and the fix

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {' '.join(self.detail.split())}"


class Stop(Exception):
    """A check failed that the later ones depend on."""


Checks = Generator[Check, None, Any]  # yields its lines; returns what the next checks need


def redact(text: str, env: dict[str, str]) -> str:
    """``text`` with the value of every secret-looking environment variable masked."""
    for name, value in env.items():
        if len(value) >= 6 and any(word in name.upper() for word in SECRET_WORDS):
            text = text.replace(value, "***")
    return text


def _within(path: str, root: str) -> bool:
    return (path.rstrip("/") + "/").startswith(root.rstrip("/") + "/")


def _step(name: str, action: Callable[[], str]) -> Iterator[Check]:
    """One check: the action's return value is the ✓ detail, its exception the ✗ one."""
    try:
        detail = action()
    except Exception as exn:
        yield Check(name, False, " ".join(str(exn).split()) or type(exn).__name__)
        raise Stop from None
    yield Check(name, True, detail)


def _backend_class(backend: str) -> type[OmnibioContainer] | None:
    for entry in importlib.metadata.entry_points(group="miniwdl.plugin.container_backend"):
        if entry.name == backend:
            loaded = entry.load()
            if isinstance(loaded, type) and issubclass(loaded, OmnibioContainer):
                return loaded
    return None


def _omnibio_backends() -> str:
    entries = importlib.metadata.entry_points(group="miniwdl.plugin.container_backend")
    return ", ".join(sorted(e.name for e in entries if e.name.startswith("omnibio_")))


def _read_back(uri: str, run_id: str) -> str:
    """The launcher reads results.json, as verification does, and deletes it, as it does a stale
    one before an attempt."""
    try:
        document = json.loads(download_result(uri))
    except Exception as exn:
        problem = f"{type(exn).__name__}: {str(exn)[:200]}"
        raise RuntimeError(f"cannot read {uri} ({problem}); give this host read access") from None
    if document.get("run_id") != run_id:
        raise RuntimeError(f"{uri} holds run {document.get('run_id')!r}, not the probe's")
    try:
        delete_result(uri)
    except Exception as exn:
        raise RuntimeError(
            f"read {uri} but cannot delete it ({type(exn).__name__}); the plugin deletes a stale "
            "results.json before each attempt: give this host delete access"
        ) from None
    return f"read back and deleted {uri}"


class Preflight:
    """The checks in order; a failed one stops those that depend on it."""

    def __init__(self, cfg_file: str | None, image: str, directory: str | None, timeout: float):
        self.cfg_file = cfg_file
        self.image = image
        self.directory = directory
        self.timeout = timeout
        self.logger = logging.getLogger("miniwdl_omnibio.check")
        self.engine: Engine[Any] | None = None

    def checks(self) -> Iterator[Check]:
        try:
            cfg = yield from self._config()
            yield from _step(f"{self.section} start ({self.start_words})", lambda: self._start(cfg))
            assert self.engine
            fs = self.engine.filesystem
            yield from self._result_prefix_here(fs)
            directory = yield from self._run_directory(fs)
            yield from self._probe(fs, directory)
        except Stop:
            return
        finally:
            if self.engine:
                self.engine.shutdown(self.logger)

    def _config(self) -> Checks:
        if self.cfg_file and not os.path.isfile(self.cfg_file):
            yield Check("config file", False, f"{self.cfg_file} does not exist; check --cfg")
            raise Stop
        cfg = miniwdl_config.Loader(self.logger, [self.cfg_file] if self.cfg_file else None)
        self.backend_name = cfg["scheduler"]["container_backend"]
        backend = _backend_class(self.backend_name)
        if backend is None:
            fix = (
                "set [scheduler] container_backend (MINIWDL__SCHEDULER__CONTAINER_BACKEND) "
                f"to one of {_omnibio_backends()}"
            )
            yield Check("backend", False, f"{self.backend_name!r} is not an omnibio backend; {fix}")
            raise Stop
        yield from _step("backend", lambda: self._load_engine(backend))
        yield from _step("config", lambda: self._load_settings(cfg))
        return cfg

    def _load_engine(self, backend: type[OmnibioContainer]) -> str:
        self.engine_class = backend.engine_type()
        self.section = self.engine_class.section
        self.start_words = STARTS.get(self.section, "start-up checks")
        return f"{self.backend_name} ([scheduler] container_backend)"

    def _load_settings(self, cfg: miniwdl_config.Loader) -> str:
        check_sections(cfg, ("omnibio", self.section))
        self.omnibio = OmnibioSettings.load(cfg)
        return f"no unknown key in [omnibio], [{self.section}]; [omnibio] values valid"

    def _start(self, cfg: miniwdl_config.Loader) -> str:
        self.engine = self.engine_class.start(cfg, self.logger)
        return "ok"

    def _result_prefix_here(self, fs: SharedFilesystem | None) -> Iterator[Check]:
        """A file:// prefix: this host creates its directories, on the shared filesystem where
        the engine has one (so that tasks reach them too)."""
        prefix = self.omnibio.result_prefix
        if prefix is None or prefix.scheme != "file":
            return
        name = "result prefix on this host"
        if fs and not _within(prefix.key, fs.host_root):
            fix = f"set [omnibio] result_uri_prefix to a file:// URI under {fs.host_root}"
            yield Check(name, False, f"{prefix} is not on the shared filesystem; {fix}")
            raise Stop
        try:
            os.makedirs(prefix.key, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=prefix.key, prefix=".omnibio-check-"):
                pass
        except OSError as exn:
            fix = "make it writable for this user, or set [omnibio] result_uri_prefix"
            yield Check(name, False, f"cannot write in {prefix.key} ({exn.strerror}); {fix}")
            raise Stop from None
        yield Check(name, True, f"{prefix.key} writable")

    def _run_directory(self, fs: SharedFilesystem | None) -> Checks:
        """A fresh directory for the probe's run: on the shared filesystem, for engines with one."""
        parent = os.path.abspath(self.directory) if self.directory else None
        if not fs:
            return tempfile.mkdtemp(prefix="omnibio-check-", dir=parent)
        name = "shared filesystem on this host"
        parent = parent or fs.host_root
        if not _within(parent, fs.host_root):
            fix = f"pass a --dir under it, or set [{self.section}] host_mount_path"
            yield Check(name, False, f"{parent} is not under {fs.host_root}; {fix}")
            raise Stop
        try:
            directory = tempfile.mkdtemp(prefix=".omnibio-check-", dir=parent)
            os.chmod(directory, 0o755)
        except OSError as exn:
            fix = f"mount the shared filesystem there, or set [{self.section}] host_mount_path"
            yield Check(name, False, f"cannot write in {parent} ({exn.strerror}); {fix}")
            raise Stop from None
        yield Check(name, True, f"{fs.host_root} writable; tasks see it at {fs.container_root}")
        return directory

    def _probe(self, fs: SharedFilesystem | None, directory: str) -> Iterator[Check]:
        env = dict(os.environ, MINIWDL__SCHEDULER__CONTAINER_BACKEND=self.backend_name)
        started = time.monotonic()
        try:
            probe = run_probe(directory, self.cfg_file, self.image, self.timeout, env)
        except KeyboardInterrupt:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        if probe.error:
            fix = self._probe_fix(probe.error, fs)
            yield Check(
                "probe task", False, f"{probe.error}; {fix} (its run is kept in {directory})"
            )
            raise Stop
        shutil.rmtree(directory, ignore_errors=True)
        took = time.monotonic() - started
        yield Check("probe task", True, f"ran on {self.backend_name} in {took:.0f} s")
        yield from self._probe_findings(probe, fs)

    def _probe_fix(self, error: str, fs: SharedFilesystem | None) -> str:
        """The likely fix of a failed probe task, from the words of its error."""
        if self.image in error or "ModuleNotFoundError" in error or "python3" in error:
            return (
                "--image must name an image the workers can pull, with python3 and miniwdl-omnibio"
            )
        if fs:
            return (
                f"the workers must mount the shared filesystem at [{self.section}] mount_path "
                f"({fs.container_root}), as this host does at host_mount_path ({fs.host_root})"
            )
        return "its log says more"

    def _probe_findings(self, probe: ProbeRun, fs: SharedFilesystem | None) -> Iterator[Check]:
        report = probe.report
        if fs:
            name = "shared filesystem from a task"
            if report.get("input") == MARKER:
                yield Check(name, True, f"the task read its input under {fs.container_root}")
            else:
                fix = f"check [{self.section}] readonly_mount_path and the workers' mounts"
                yield Check(name, False, f"{report.get('input_error', 'no input seen')}; {fix}")
        prefix = self.omnibio.result_prefix
        if prefix is None:
            detail = "[omnibio] result_uri_prefix is not set: tools get no RESULT_URI"
            yield Check("result prefix", True, detail)
            return
        name = "result prefix writable from a task"
        if "uploaded" not in report:
            problem = report.get("upload_error", "the task got no RESULT_URI")
            fix = "give the tasks write access (credentials in their environment, or a role)"
            if "ModuleNotFoundError" in problem:
                fix = "--image must name an image with the tool runtime (miniwdl-omnibio)"
            yield Check(name, False, f"{prefix}: {problem}; {fix}")
            return
        yield Check(name, True, report["uploaded"])
        yield from _step(
            "result prefix readable from this host",
            lambda: _read_back(report["uploaded"], report["run_id"]),
        )


def run(cfg_file: str | None, image: str, directory: str | None, timeout: float, out: IO) -> int:
    """Print one line per check; 0 when every check passed."""
    failed = 0
    env = dict(os.environ)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for check in Preflight(cfg_file, image, directory, timeout).checks():
            print(redact(check.line(), env), file=out, flush=True)
            failed += not check.ok
    except KeyboardInterrupt:
        print("✗ interrupted: the probe task was cancelled; run the check again", file=out)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 1 if failed else 0


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends the check as Ctrl-C does: the probe's miniwdl is stopped and cleans up."""
    raise KeyboardInterrupt
