"""An HTTP proxy in front of moto server: it counts and records every request, and makes moto's
AWS Batch answer the way AWS Batch does in situations moto never produces.

Tests (and the benchmark) reach moto only through it (MotoServer.endpoint). Each behaviour names
the page it follows; a behaviour no AWS page states is marked "guess:", and the engine must work
under each alternative the proxy can show.

- ``fail_next(operation, n)`` / ``every``: throttling. AWS knowledge center, "aws-batch-requests-
  error": past the account's API rate Batch answers "Status Code: 429; Error Code:
  TooManyRequestsException", on every API including SubmitJob and DescribeJobs. guess: no
  Retry-After header (no AWS page mentions one), so none is sent.
- ``hold_if``: a job Batch can never place stays RUNNABLE with a statusReason ("Jobs stuck in a
  RUNNABLE status"; the reasons as API_JobDetail statusReason lists them) until it is terminated
  (API_TerminateJob: jobs not yet STARTING "are cancelled"); moto runs every job. The same page:
  the reason of "a RUNNABLE job at the head and blocking the queue" is "updated into the
  statusReason field as a part of ListJobs and DescribeJobs": one job carries it, not every job
  behind it. ``hold_at`` says which of a held array's jobs: "every" child, the "parent", or the
  "head" child. guess: which child of an array is at the head is not documented; here the last,
  so a client that reads the first child sees no reason. A held array's parent is PENDING with
  its children counted RUNNABLE ("Array jobs": "An array parent job is updated to PENDING when
  any child job is updated to RUNNABLE"). ListJobs (``arrayJobId``, ``jobStatus``) answers as
  DescribeJobs does (moto filters on its own states, where held children run).
- ``late_children``: right after an array's SubmitJob its children are not listed yet
  (Netflix/metaflow#543: DescribeJobs answered nothing for a job just submitted; guess: children
  appear after their parent, the same way). The first ``late_children`` DescribeJobs or ListJobs
  calls that ask about them leave them out, and TerminateJob of one of them meets an id Batch does
  not know: guess: API_TerminateJob lists ClientException for "an identifier that's not valid",
  while moto accepts any id and does nothing; ``unknown_job`` = "error" or "ignore" shows each.
- ``break_if``: a job whose host cannot set up its volumes fails before its container runs, with
  the reason ``break_if`` gives and no exit code: the ECS stopped-task reasons ("Stopped tasks
  error codes": ResourceInitializationError, DockerTimeoutError; "failed to invoke EFS utils
  commands to set up EFS volumes" with the mount.nfs4 texts of AWS's EFS troubleshooting page),
  or, on EC2, docker's "error while mounting volume" (aws/efs-utils#39) in a
  CannotStartContainerError. guess: where Batch puts that reason (the job's statusReason or the
  container's reason) is not documented; both can be shown.
- SubmitJob limits, always on. "Service quotas": "Maximum job payload size (for SubmitJob API
  operations): 30 KiB"; past it Batch answers 400 ClientException "Job size must be less than 30
  KiB, got 47 KiB" (the service's words as ASFHyP3/hyp3#3041 quotes them). A smaller request whose
  containerOverrides exceed what ECS takes (API_RunTask overrides: "A total of 8192 characters
  are allowed for overrides") is accepted, and the job goes FAILED with the statusReason
  "Container Overrides length must be at most 8192" (Netflix/metaflow#1482, hyp3#3041).
  guess: how Batch measures either (here the request body's bytes, and the request's
  containerOverrides as compact JSON, nothing of Batch's own added); the engine keeps margins.
- ``time_scale``: attemptDurationSeconds cannot be below 60 (API_JobTimeout), too long for a
  test, so SubmitJob reaches moto with the timeout divided by ``time_scale`` and answers show the
  job's own timeout and run time multiplied back. A job stopped at it gets the statusReason
  "Job attempt duration exceeded timeout". guess: the docs ("Job timeouts") say Batch terminates
  it but not in which words; those are the words public Batch clients match (Nextflow, redun).
  ``timeout_reason = False`` shows the other case: no reason, only the run time.
"""

import http.client
import http.server
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3

Request = dict[str, Any]  # a SubmitJob body
THROTTLED = (429, "TooManyRequestsException", "Too Many Requests")
HOLD_AT = ("every", "parent", "head")
UNAVAILABLE = (503, "ServiceUnavailableException", "try again")
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
JOB_SIZE_LIMIT = 30 * 1024
OVERRIDES_LIMIT = 8192
OVERRIDES_REASON = "Container Overrides length must be at most 8192"


def too_large(body: bytes) -> tuple[int, str, str] | None:
    """Batch's refusal of a SubmitJob request over 30 KiB."""
    if len(body) <= JOB_SIZE_LIMIT:
        return None
    got = math.ceil(len(body) / 1024)
    message = (
        f"Error executing request, Exception : Job size must be less than 30 KiB, got {got} KiB"
    )
    return 400, "ClientException", message


def overrides_too_long(request: Request) -> str | None:
    overrides = request.get("containerOverrides") or {}
    length = len(json.dumps(overrides, separators=(",", ":")))
    return OVERRIDES_REASON if length > OVERRIDES_LIMIT else None


def operation_of(method: str, path: str, headers: Any, body: bytes) -> tuple[str, str]:
    """(service, operation) of a request: the service from its SigV4 credential scope, the
    operation from the protocol (Batch: REST path; CloudWatch Logs: X-Amz-Target; EC2: Action;
    S3: the HTTP method)."""
    scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", headers.get("Authorization") or "")
    service = scope.group(1) if scope else "unsigned"
    if service == "batch":
        return service, path.split("?")[0].rsplit("/", 1)[-1].lower()
    target = headers.get("X-Amz-Target") or ""
    if target:
        return service, target.split(".")[-1]
    action = re.search(rb"(?:^|&)Action=(\w+)", body)
    return service, action.group(1).decode() if action else method


class BatchProxy:
    def __init__(self, upstream_port: int, moto_client: Callable[[str], Any]) -> None:
        self.upstream_port = upstream_port
        self._moto = moto_client  # boto3 clients straight to moto, for the proxy's own calls
        self._lock = threading.Lock()
        self.reset()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, data = proxy.handle(self.command, self.path, self.headers, body)
                self.send_response(status)
                # A HEAD answer carries the length a GET would have (RFC 9110, 9.3.2): S3's
                # HeadObject reports an object's size in it, so it is relayed, not recomputed.
                head = self.command == "HEAD"
                hop = ("transfer-encoding", "connection") + (() if head else ("content-length",))
                for key, value in headers:
                    if key.lower() not in hop:
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        """Forget every rule and record (between tests)."""
        with self._lock:
            self.calls: Counter[str] = Counter()  # "service Operation" -> requests, retries too
            self.bodies: list[tuple[str, bytes]] = []  # (Batch operation, request body) as sent
            self.answered: Counter[str] = Counter()  # "operation status" for injected answers
            self._faults: dict[str, list[tuple[int, str, str]]] = {}
            self.every = 0  # every n-th SubmitJob/DescribeJobs fails (429 and 503 in turn)
            self._seen = 0
            self.hold_if: Callable[[Request], str | None] | None = None
            self.hold_at = "every"
            self.late_children = 0
            self.unknown_job = "ignore"
            self.break_if: Callable[[Request], str | None] | None = None
            self.break_in_container_reason = False
            self.time_scale = 1.0
            self.timeout_reason = True
            self._held: dict[str, str] = {}  # job id -> RUNNABLE statusReason
            self._held_arrays: dict[str, tuple[str, int]] = {}  # parent -> (reason, size)
            self._late: dict[str, int] = {}  # parent -> listings its children are left out of
            self._list_status: str | None = None  # the jobStatus of the ListJobs under way
            self._broken: dict[str, tuple[str, bool]] = {}  # job id -> (reason, in container)
            self._timeouts: dict[str, tuple[int, int]] = {}  # job id -> (asked, given to moto)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- rules -----------------------------------------------------------------------------

    def fail_next(self, operation: str, count: int, answer: tuple[int, str, str] = THROTTLED):
        """Answer the next ``count`` calls of a Batch operation (e.g. "submitjob") with ``answer``
        (status, error code, message) instead of forwarding them."""
        with self._lock:
            self._faults.setdefault(operation.lower(), []).extend([answer] * count)

    def submitted(self) -> list[Request]:
        """Every SubmitJob body the proxy forwarded, as the client sent it."""
        return self.sent("submitjob")

    def sent(self, operation: str) -> list[Request]:
        """Every body of a Batch operation (e.g. "terminatejob") the proxy received."""
        with self._lock:
            return [json.loads(b) for op, b in self.bodies if op == operation]

    # --- one request -----------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        service, name = operation_of(method, path, headers, body)
        operation = name if service == "batch" else ""
        with self._lock:
            self.calls[f"{service} {name}"] += 1
            if operation:
                self.bodies.append((operation, body))
            fault = self._fault(operation) or (
                too_large(body) if operation == "submitjob" else None
            )
            if operation == "terminatejob" and self._is_late(json.loads(body)["jobId"]):
                if self.unknown_job == "ignore":
                    return 200, [("Content-Type", "application/json")], b"{}"
                job_id = json.loads(body)["jobId"]
                fault = (400, "ClientException", f"Job {job_id} does not exist")
        if fault:
            status, code, message = fault
            payload = json.dumps({"__type": code, "message": message}).encode()
            return (
                status,
                [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)],
                payload,
            )
        sent = self._before(operation, body)
        status, answer_headers, data = self._forward(method, path, headers, sent)
        if status == 200 and operation:
            data = self._after(
                operation, json.loads(body or b"{}"), json.loads(sent or b"{}"), data
            )
        return status, answer_headers, data

    def _fault(self, operation: str) -> tuple[int, str, str] | None:
        queued = self._faults.get(operation)
        if queued:
            answer = queued.pop(0)
        elif self.every and operation in ("submitjob", "describejobs"):
            self._seen += 1
            if self._seen % self.every:
                return None
            answer = THROTTLED if (self._seen // self.every) % 2 else UNAVAILABLE
        else:
            return None
        self.answered[f"{operation} {answer[0]}"] += 1
        return answer

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=300)
        try:
            relayed = {
                k: v
                for k, v in headers.items()
                if k.lower() not in ("connection", "keep-alive", "content-length")
            }
            upstream.request(method, path, body=body, headers=relayed)
            response = upstream.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            upstream.close()

    # --- AWS Batch as documented -----------------------------------------------------------

    def _is_late(self, job_id: str) -> bool:
        """A child of an array whose children Batch does not list yet."""
        return ":" in job_id and self._late.get(job_id.split(":")[0], 0) > 0

    def _before(self, operation: str, body: bytes) -> bytes:
        """The SubmitJob moto gets: its timeout divided by time_scale; a broken job's command
        replaced by one that does nothing (its host fails before the container runs), a held
        job's by one that waits to be terminated (it never starts). A ListJobs
        by jobStatus goes to moto without it (the proxy filters on the states it shows)."""
        if operation == "listjobs":
            request = json.loads(body)
            with self._lock:
                self._list_status = request.pop("jobStatus", None)
            return json.dumps(request).encode()
        if operation != "submitjob":
            return body
        request = json.loads(body)
        if self._breaks(request):
            request.setdefault("containerOverrides", {})["command"] = ["true"]
        elif self.hold_if and self.hold_if(request):  # never placed: none of its command runs
            request.setdefault("containerOverrides", {})["command"] = ["sleep", "infinity"]
        seconds = (request.get("timeout") or {}).get("attemptDurationSeconds")
        if seconds and self.time_scale != 1:
            request["timeout"]["attemptDurationSeconds"] = max(
                1, math.ceil(seconds / self.time_scale)
            )
        return json.dumps(request).encode()

    def _after(self, operation: str, asked: Request, sent: Request, data: bytes) -> bytes:
        answer = json.loads(data or b"{}")
        if operation == "submitjob":
            self._accepted(asked, sent, answer["jobId"])
        elif operation == "terminatejob":
            job_id = asked.get("jobId", "")
            with self._lock:  # a parent's children go with it (moto_batch.py, 6)
                for held in [h for h in self._held if job_id in (h, h.split(":")[0])]:
                    self._held.pop(held)
                self._held_arrays.pop(job_id, None)
        elif operation == "describejobs":
            answer["jobs"] = [self._as_batch(job) for job in self._listed(answer.get("jobs", []))]
            return json.dumps(answer).encode()
        elif operation == "listjobs":
            with self._lock:
                status = self._list_status
            jobs = [self._as_batch(job) for job in self._listed(answer.get("jobSummaryList", []))]
            answer["jobSummaryList"] = [j for j in jobs if status in (None, j["status"])]
            return json.dumps(answer).encode()
        return data

    def _listed(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The jobs Batch lists: children of an array too recent left out."""
        with self._lock:
            late = {j["jobId"].split(":")[0] for j in jobs if self._is_late(j["jobId"])}
            for parent in late:
                self._late[parent] -= 1
        return [j for j in jobs if ":" not in j["jobId"] or j["jobId"].split(":")[0] not in late]

    def _accepted(self, asked: Request, sent: Request, job_id: str) -> None:
        size = (asked.get("arrayProperties") or {}).get("size")
        ids = [f"{job_id}:{i}" for i in range(size)] if size else [job_id]
        hold = self.hold_if(asked) if self.hold_if else None
        broken = self._breaks(asked)
        seconds = (asked.get("timeout") or {}).get("attemptDurationSeconds")
        with self._lock:
            if size and self.late_children:
                self._late[job_id] = self.late_children
            if size and hold:
                self._held_arrays[job_id] = (hold, size)
            for index, one in enumerate(ids):
                if hold:
                    on_this = self.hold_at == "every" or not size
                    on_this |= self.hold_at == "head" and index == len(ids) - 1
                    self._held[one] = hold if on_this else ""
                if broken:
                    self._broken[one] = broken
                if seconds and self.time_scale != 1:
                    self._timeouts[one] = (seconds, sent["timeout"]["attemptDurationSeconds"])
        if broken:  # the job ends at once, its container never (really) running
            batch = self._moto("batch")
            for one in ids:
                batch.terminate_job(jobId=one, reason=broken[0])

    def _breaks(self, request: Request) -> tuple[str, bool] | None:
        """(reason, given as the container's reason) of a job that fails before it runs."""
        reason = self.break_if(request) if self.break_if else None
        if reason:
            return reason, self.break_in_container_reason
        reason = overrides_too_long(request)
        return (reason, False) if reason else None

    def _as_batch(self, job: dict[str, Any]) -> dict[str, Any]:
        """One DescribeJobs entry or ListJobs summary as Batch would give it."""
        job_id = job["jobId"]
        with self._lock:
            held = self._held.get(job_id)
            held_array = self._held_arrays.get(job_id)
            broken = self._broken.get(job_id)
            timeout = self._timeouts.get(job_id)
            hold_at = self.hold_at
        if held_array:
            reason, size = held_array
            job["status"] = "PENDING"
            job["arrayProperties"] = {"size": size, "statusSummary": {"RUNNABLE": size}}
            if hold_at == "parent":
                job["statusReason"] = reason
            return job
        if held is not None:
            job["status"] = "RUNNABLE"
            job.pop("statusReason", None)
            if held:
                job["statusReason"] = held
            for key in ("startedAt", "stoppedAt", "attempts"):
                job.pop(key, None)
            return job
        if broken and job["status"] in ("SUCCEEDED", "FAILED"):
            reason, in_container = broken
            job["status"] = "FAILED"
            (job.setdefault("container", {})).pop("exitCode", None)
            if in_container:
                job.pop("statusReason", None)
                job["container"]["reason"] = reason
            else:
                job["statusReason"] = reason
            return job
        if timeout:
            asked, given = timeout
            job["timeout"] = {"attemptDurationSeconds": asked}
            started, stopped = job.get("startedAt"), job.get("stoppedAt")
            if started and stopped:
                ran = stopped - started
                job["stoppedAt"] = started + int(ran * self.time_scale)
                timed_out = ran >= 1000 * given - 500 and job["status"] == "FAILED"
                if timed_out and self.timeout_reason and not job.get("statusReason"):
                    job["statusReason"] = TIMEOUT_REASON
        return job


def moto_clients(endpoint: str, region: str, credentials: dict[str, str]) -> Callable[[str], Any]:
    session = boto3.session.Session(
        region_name=region, **{k.lower(): v for k, v in credentials.items()}
    )
    return lambda service: session.client(service, endpoint_url=endpoint)
