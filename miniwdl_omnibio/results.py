"""Reading a task's results.json back on the launcher and deciding whether it verifies the attempt.

The tool runtime uploads results.json from inside the container; the plugin reads it with the same
store code after the command exited 0. Pure of miniwdl: the lifecycle decides what a problem does
(fail the task, or warn) from ``[omnibio] result_check``.
"""

import json
import os
from typing import Any

from WDL._util import write_atomic

from .runtime.store import delete_result, download_result
from .runtime.uri import ResultUri

# The verified results.json is copied here, in the task's working directory, so WDL outputs can
# use it: read_json("omnibio_result.json") or File result = "omnibio_result.json".
RESULT_FILE = "omnibio_result.json"
RESULT_CHECKS = ("fail", "warn", "off")


class ResultProblem(Exception):
    """results.json does not verify the attempt; the message is one line naming what is wrong."""


def clear_stale(result: ResultUri) -> None:
    """Remove a results.json an earlier attempt left: it must not verify this one."""
    delete_result(result)


def verify_result(result: ResultUri, run_id: str, host_work_dir: str) -> dict[str, Any]:
    """The attempt's results.json, checked and copied to ``host_work_dir``/RESULT_FILE."""
    try:
        document = json.loads(download_result(result))
    except FileNotFoundError:
        raise ResultProblem(f"results.json missing: the tool did not upload {result}") from None
    except Exception as exn:
        raise ResultProblem(f"results.json unreadable at {result}: {str(exn)[:300]}") from None
    if not isinstance(document, dict):
        raise ResultProblem(f"results.json unreadable at {result}: not a JSON object")
    if document.get("run_id") not in (None, run_id):
        raise ResultProblem(
            f"results.json at {result} is from run {document['run_id']}, not {run_id}"
        )
    if document.get("ok") is False:
        error = f": {document['error']}" if document.get("error") else ""
        raise ResultProblem(f"results.json at {result} says ok=false{error}")
    write_atomic(json.dumps(document, indent=2), os.path.join(host_work_dir, RESULT_FILE))
    return document
