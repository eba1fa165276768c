"""The Batch emulator's parts that must match the service exactly: Shared Key checking (against
the azure-batch SDK's own signing), OData filters, and the docker flags a node accepts."""

import base64
import datetime
import secrets
from email.utils import format_datetime

import pytest
from azure.batch._patch import BatchSharedKeyAuthPolicy
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest

from tests.emulators.azurebatch_emulator import sharedkey
from tests.emulators.azurebatch_emulator.odata import FilterError, parse_filter, select
from tests.emulators.azurebatch_emulator.service import InvalidContainerSettings, parse_run_options

ACCOUNT = "acct"
KEY = base64.b64encode(secrets.token_bytes(64)).decode()


def _signed(method: str, url: str, **kwargs):
    """Headers and target of a request as the SDK's Shared Key policy signs it."""
    request = HttpRequest(method, url, **kwargs)
    BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(ACCOUNT, KEY)).on_request(
        PipelineRequest(request, PipelineContext(None))
    )
    headers = {k.lower(): v for k, v in request.headers.items()}
    if method not in ("GET", "HEAD"):
        headers.setdefault("content-length", "0")  # what the transport sends for an empty body
    target = request.url.split("//", 1)[1]
    return headers, target[target.index("/") :]


@pytest.mark.parametrize(
    "method, url, kwargs",
    [
        (
            "GET",
            "http://127.0.0.1:1/jobs/j-1/tasks?api-version=2025-06-01&%24filter=state%20ne%20%27active%27&%24select=id%2Cstate",
            {},
        ),
        (
            "POST",
            "http://127.0.0.1:1/jobs/j-1/tasks?api-version=2025-06-01",
            {"json": {"id": "t", "commandLine": "echo hi"}},
        ),
        ("POST", "http://127.0.0.1:1/jobs/j-1/tasks/t/terminate?api-version=2025-06-01", {}),
        (
            "GET",
            "http://127.0.0.1:1/jobs/j/tasks/t/files/stderr.txt?api-version=2025-06-01",
            {"headers": {"ocp-range": "bytes=0-99"}},
        ),
    ],
)
def test_sdk_signatures_verify(method, url, kwargs):
    headers, target = _signed(method, url, **kwargs)
    assert sharedkey.check(method, target, headers, ACCOUNT, KEY) is None


def test_wrong_key_tampering_and_stale_dates_fail():
    headers, target = _signed("GET", "http://127.0.0.1:1/pools/p?api-version=2025-06-01")
    other_key = base64.b64encode(secrets.token_bytes(64)).decode()
    assert "MAC signature" in sharedkey.check("GET", target, headers, ACCOUNT, other_key)
    assert "MAC signature" in sharedkey.check(
        "GET", target.replace("/p?", "/q?"), headers, ACCOUNT, KEY
    )
    assert "MAC signature" in sharedkey.check("DELETE", target, headers, ACCOUNT, KEY)
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    headers, target = _signed(
        "GET",
        "http://127.0.0.1:1/pools/p?api-version=2025-06-01",
        headers={"ocp-date": format_datetime(stale, usegmt=True)},
    )
    assert sharedkey.check("GET", target, headers, ACCOUNT, KEY) == "Request date header too old."
    assert "account" in sharedkey.check(
        "GET", target, {**headers, "authorization": "SharedKey other:abc"}, ACCOUNT, KEY
    )


TASK = {
    "id": "call-a-1",
    "state": "completed",
    "executionInfo": {"exitCode": 3, "requeueCount": 0, "endTime": "2026-01-02T03:04:05.000Z"},
}
ALLOWED = (
    "id",
    "state",
    "executionInfo/exitCode",
    "executionInfo/requeueCount",
    "executionInfo/endTime",
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("state eq 'completed'", True),
        ("state ne 'active'", True),
        ("state eq 'running' or state eq 'preparing'", False),
        ("(executionInfo/exitCode lt 0) or (executionInfo/exitCode gt 0)", True),
        ("startswith(id, 'call-a') and not (executionInfo/requeueCount gt 0)", True),
        ("executionInfo/endTime ge datetime'2026-01-01T00:00:00Z'", True),
        ("state eq 'Completed'", True),  # enum values compare case-insensitively
    ],
)
def test_filters(text, expected):
    assert parse_filter(text, ALLOWED)(TASK) is expected


@pytest.mark.parametrize(
    "text",
    ["commandLine eq 'x'", "state eq", "state zz 'a'", "(state eq 'a'", "state eq 'a' extra"],
)
def test_bad_filters_are_rejected(text):
    with pytest.raises(FilterError):
        parse_filter(text, ALLOWED)


def test_select_keeps_named_properties():
    assert select(dict(TASK, url="u"), "id, state") == {"id": "call-a-1", "state": "completed"}


def test_run_options_become_docker_arguments():
    options = parse_run_options(
        "--cpus 1 --memory 268435456 -v /a:/a -v /a:/ro:ro --workdir /a/w --label k=v --user 1:2"
    )
    assert options["binds"] == ["/a:/a", "/a:/ro:ro"] and options["nano_cpus"] == 10**9
    assert options["mem_limit"] == "268435456" and options["working_dir"] == "/a/w"
    assert (
        options["labels"] == {"k": "v"}
        and options["user"] == "1:2"
        and options["network_mode"] == "host"
    )
    for bad in ("--frobnicate", "--cpus", "--gpus all", "--cpus 100000"):
        with pytest.raises(InvalidContainerSettings):
            parse_run_options(bad)
