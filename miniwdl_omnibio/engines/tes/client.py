"""HTTP to a GA4GH TES v1.1 server, as the spec and the servers people run need it.

Not py-tes's client: py-tes appends /ga4gh/tes/v1 itself (TES on Azure serves /v1), retries a
failed request on other base paths (so a POST may create a task twice), and refuses JSON fields
its models do not know. Here the base path that answered service-info is used for every call,
a create is sent once (the engine decides whether to send it again), answers are read as plain
JSON where unknown fields never matter, and tag filters go as interleaved pairs.
"""

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests
from WDL import Error

from ...retrying import Result, retry

# Where TES servers serve the API below the URL a user gives: the spec's /ga4gh/tes/v1 (Funnel,
# TESK, poiesis), /v1 (Microsoft's TES on Azure: its controller routes are /v1/tasks), or the
# URL itself (a URL that already includes the base path).
BASE_PATHS = ("/ga4gh/tes/v1", "/v1", "")
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)  # worth asking again (after a pause)


class TesProblem(Error.RuntimeError):
    """A failed exchange with the TES server, as one line naming the server."""


@dataclass(frozen=True)
class Credentials:
    user: str | None  # basic auth when set
    secret: str | None = field(repr=False)  # the password, or else the bearer token
    hint: str  # how to name them in an error: config keys and variable names, never the value

    @property
    def kind(self) -> str:
        return "basic" if self.user else "bearer" if self.secret else "none"


class Refused(Exception):
    """A request that did not succeed: the HTTP status (None: no answer) and the server's words."""

    def __init__(self, status: int | None, said: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {said}" if status else said)
        self.status = status
        self.said = said
        self.retry_after = retry_after


def worth_retrying(exn: Exception) -> float | bool:
    """retrying's verdict: again while the server throttles, is busy or silent (its Retry-After)."""
    if not isinstance(exn, Refused) or exn.status not in (None, *RETRY_STATUSES):
        return False
    return True if exn.retry_after is None else exn.retry_after


def refusal(response: requests.Response) -> Refused:
    """A response that is not OK: the server's reason in one line (a JSON message, else the start
    of the body) and its Retry-After (absent, or an HTTP date: treated as absent)."""
    retry_after: float | None = None
    with contextlib.suppress(ValueError):
        retry_after = float(response.headers.get("Retry-After", ""))
    text = response.text
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            keys = ("message", "msg", "detail", "error", "title")
            text = next((body[k] for k in keys if isinstance(body.get(k), str)), text)
    return Refused(response.status_code, " ".join(text.split())[:300], retry_after)


@dataclass(eq=False)
class TesClient:
    """One TES server. Thread-safe: each thread has its own HTTP session (keep-alive)."""

    root: str  # the URL a user gave, without a trailing slash
    credentials: Credentials
    timeout: float
    max_retries: int
    sleep: Callable[[float], None] = time.sleep
    base: str | None = None  # set by service_info()
    _local: threading.local = field(default_factory=threading.local)

    @property
    def api(self) -> str:
        return self.root + (self.base or "")

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            user, secret = self.credentials.user, self.credentials.secret
            if user:
                session.auth = (user, secret or "")
            elif secret:
                session.headers["Authorization"] = f"Bearer {secret}"
        return session

    def send(
        self, method: str, path: str, params: Sequence[tuple[str, str]] = (), body: Any = None
    ) -> Any:
        """One request to ``api + path``; its JSON answer, or Refused."""
        try:
            response = self._session().request(
                method, self.api + path, params=list(params), json=body, timeout=self.timeout
            )
        except requests.RequestException as exn:
            raise Refused(None, type(exn).__name__) from None
        if not response.ok:
            raise refusal(response)
        if not response.content.strip():
            return {}
        try:
            return response.json()
        except ValueError:
            raise Refused(response.status_code, "the answer is not JSON") from None

    def retried(
        self,
        call: Callable[[], Result],
        action: str,
        again: bool = True,
        sleep: Callable[[float], None] | None = None,
    ) -> Result:
        """``call()``, sent again while worth_retrying, up to max_retries times (``again`` False:
        once, the tracker backs off); TesProblem naming ``action`` when it cannot succeed."""
        tries = self.max_retries + 1 if again else 1
        try:
            return retry(call, worth_retrying, tries, sleep or self.sleep)
        except Refused as refused:
            raise TesProblem(self.describe(refused, action)) from None

    def describe(self, refused: Refused, action: str) -> str:
        """One line for a failed request; quotes no header, so no credential."""
        status, hint = refused.status, self.credentials.hint
        server = f"omnibio_tes: the TES server at {self.root}"
        if status is None:
            return (
                f"omnibio_tes: no answer from the TES server at {self.root} while trying to "
                f"{action} ({refused.said}); check [omnibio_tes] url and that the server is up"
            )
        if status in (401, 403) and self.credentials.kind == "none":
            return f"{server} requires credentials (HTTP {status}) to {action}; set {hint}"
        if status in (401, 403):
            rejected = f"rejected our credentials (HTTP {status}) while trying to {action}"
            return f"{server} {rejected}; check {hint}"
        said = f": {refused.said}" if refused.said else ""
        return f"{server} answered HTTP {status} while trying to {action}{said}"

    def service_info(self) -> dict[str, Any]:
        """GET service-info below each base path in turn; the first that describes a TES service
        fixes the base path of every later call."""
        tried: list[str] = []
        for base in BASE_PATHS:
            where = f"{self.root}{base}/service-info"
            try:
                self.base = base
                info = self.send("GET", "/service-info")
            except Refused as refused:
                if refused.status in (404, 405) or refused.said == "the answer is not JSON":
                    tried.append(f"{where} (HTTP {refused.status})")
                    continue
                raise TesProblem(self.describe(refused, f"read {where}")) from None
            service = info.get("type") if isinstance(info, dict) else None
            artifact = service.get("artifact") if isinstance(service, dict) else None
            if str(artifact).lower() == "tes":
                return info
            tried.append(f"{where} (type.artifact {artifact!r}, not 'tes')")
        raise TesProblem(
            f"omnibio_tes: {self.root} is not a TES server: no TES service-info at "
            + "; ".join(tried)
        )

    def create(self, document: dict[str, Any]) -> str:
        """POST the task once; its id, or Refused (the caller decides whether to try again)."""
        answer = self.send("POST", "/tasks", body=document)
        task_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise Refused(200, f"the answer names no task id: {str(answer)[:200]}")
        return task_id

    def get(self, task_id: str, view: str, again: bool = True) -> dict[str, Any] | None:
        """The task in a view; None when the server does not know it (HTTP 404)."""

        def once() -> dict[str, Any] | None:
            try:
                answer = self.send("GET", f"/tasks/{task_id}", [("view", view)])
            except Refused as refused:
                if refused.status == 404:
                    return None
                raise
            if not isinstance(answer, dict):
                raise Refused(200, "the answer is not a TES task")
            return answer

        return self.retried(once, f"get the task {task_id}", again)

    def cancel(self, task_id: str) -> None:
        action = f"cancel the task {task_id}"
        self.retried(lambda: self.send("POST", f"/tasks/{task_id}:cancel"), action)

    def list_tasks(
        self,
        tags: Sequence[tuple[str, str]],
        state: str | None = None,
        view: str = "MINIMAL",
        page_size: int = 256,
        again: bool = True,
        name_prefix: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Tasks whose tags match (``tag_key=a&tag_value=x&tag_key=b&tag_value=y``, the pairing
        the spec shows and TES on Azure parses by position), page by page. Filters the server
        may ignore (TESK ignores all but the page and view): callers check what they get.
        ``again``: as in ``retried``."""
        filters = [("state", state), ("name_prefix", name_prefix)]
        params = [("view", view), ("page_size", str(page_size))]
        params += [(name, value) for name, value in filters if value]
        params += [pair for key, value in tags for pair in (("tag_key", key), ("tag_value", value))]
        query, seen = params, set[str]()
        while True:
            page = self.retried(partial(self.send, "GET", "/tasks", query), "list tasks", again)
            page = page if isinstance(page, dict) else {}
            tasks = page.get("tasks")
            for task in tasks if isinstance(tasks, list) else []:
                if isinstance(task, dict) and isinstance(task.get("id"), str):
                    yield task
            token = page.get("next_page_token")
            if not isinstance(token, str) or not token or token in seen:
                return  # the last page (or a server repeating a token: stop, do not loop)
            seen.add(token)
            query = [*params, ("page_token", token)]
