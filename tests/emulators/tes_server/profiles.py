"""Server profiles: which TES implementation the test server behaves as. Each profile is data
(switches and small functions) read by server.py; each switch cites where it was read.

Sources: the TES v1.1 OpenAPI (ga4gh/task-execution-schemas
openapi/task_execution_service.openapi.yaml); Funnel (ohsu-comp-bio/funnel: server/tes.go,
server/marshal.go, database/boltdb/tes.go, tes/extra_methods.go, tes/utils.go,
worker/worker.go, compute/local/backend.go); TESK (elixir-cloud-aai/tesk-api
TasksApiController.listTasks, TesServiceImpl, TesKubernetesConverter; the Python TESK's
tesk/api/ga4gh/tes/task/list_tasks.py; tesk-core taskmaster.py); TES on Azure
(microsoft/ga4gh-tes src/TesApi.Web/Controllers/TaskServiceApi.cs, Runner/TaskToNodeTaskConverter.cs).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import listing, views

View = Callable[[dict[str, Any], str, bool], dict[str, Any]]


@dataclass(frozen=True)
class Backend:
    """What a profile does with resources.backend_parameters."""

    fold_case: bool  # keys compared case-insensitively
    lower_keys: bool  # stored lower-cased at create
    case_duplicates_refused: bool  # {"a": .., "A": ..} refused at create
    unsupported: str  # "warn": system_logs warning and not stored (at run); "drop": dropped at
    # create; "keep": stored as sent
    strict: str  # "fail": the task ends SYSTEM_ERROR; "refuse": 400 at create; "ignore"


@dataclass(frozen=True)
class Profile:
    name: str
    base_paths: tuple[str, ...]
    filters: frozenset[str]  # list filters honoured: name_prefix, state, tags
    tags: Callable[[listing.Query], dict[str, str]]
    page_size: Callable[[str], int]
    full_pages_get_token: bool  # next_page_token on every full page, even the last
    order_by_id: bool  # list order: by task id, else newest first
    view: View
    running_exit_code: str  # an executor's log while it runs: "no-log" (appended when it
    # ends), "absent" (no exit_code key), "zero", "null"
    canceling: bool  # CancelTask shows CANCELING until the executor stopped, else CANCELED
    cancel_final_refused: bool  # CancelTask on an ended task: 400, else 200 and nothing
    file_inputs_refused: bool
    backend: Backend
    ignore_error: bool  # tesExecutor.ignore_error honoured
    first_executor_only: bool
    upload_on_error: bool  # outputs uploaded after a failed executor
    start_system_log: bool = False  # a system log line as soon as the worker takes the task


ALL_FILTERS = frozenset({"name_prefix", "state", "tags"})

SPEC = Profile(
    name="spec",
    # servers: url: /ga4gh/tes/v1
    base_paths=("/ga4gh/tes/v1",),
    filters=ALL_FILTERS,  # ListTasks parameters name_prefix, state, tag_key/tag_value
    tags=listing.zipped_tags,  # tag_key: "zipped with an optional tag_value array"
    page_size=listing.bounded_page_size,  # "Must be less than 2048. Defaults to 256."
    # guess: the spec does not say; a token only when another page exists
    full_pages_get_token=False,
    order_by_id=False,  # guess: newest first, as Funnel
    view=views.spec_view,  # components/parameters/view
    running_exit_code="no-log",  # tesExecutorLog: required: exit_code
    canceling=True,  # tesState CANCELING: "in the process of stopping"
    cancel_final_refused=False,  # guess: the spec names no error for it
    file_inputs_refused=False,  # tesInput.url: "file:///path/to/file" is an example
    backend=Backend(
        fold_case=True,  # backend_parameters: "Keys are case insensitive"
        # guess: two keys equal but for case cannot both hold (TES on Azure refuses them)
        case_duplicates_refused=True,
        lower_keys=False,
        # "Backends shall log system warnings if a key is passed that is unsupported" and
        # "shall not store or return unsupported keys"
        unsupported="warn",
        strict="fail",  # "backends should fail the task if any key/values are unsupported"
    ),
    ignore_error=True,  # tesExecutor.ignore_error: record and go on to the next executor
    first_executor_only=False,
    upload_on_error=True,  # guess: the spec does not say; as Funnel
)

FUNNEL = Profile(
    name="funnel",
    # tes/tes.proto google.api.http: /tasks, /v1/tasks and /ga4gh/tes/v1/tasks alike
    base_paths=("/ga4gh/tes/v1", "/v1", ""),
    filters=ALL_FILTERS,  # database/boltdb/tes.go ListTasks: state, name prefix, tags
    tags=listing.funnel_tags,  # tes/extra_methods.go GetTags
    page_size=listing.clamped_page_size,  # tes/utils.go GetPageSize
    full_pages_get_token=True,  # boltdb ListTasks: NextPageToken when len(tasks) == pageSize
    order_by_id=False,  # boltdb ListTasks: from the last key back; ids are time-ordered xids
    view=views.funnel_view,  # server/marshal.go CustomMarshal
    # protojson EmitUnpopulated (server/marshal.go): exit_code 0 until the executor's
    # ExecutorExitCode event
    running_exit_code="zero",
    canceling=False,  # server/tes.go CancelTask writes the CANCELED state at once
    cancel_final_refused=False,  # CancelTask: "Task already in terminal state", success
    file_inputs_refused=False,  # storage/local.go with AllowedDirs
    backend=Backend(
        # compute/local/backend.go CheckBackendParameterSupport: exact map lookup, only when
        # strict, refused as InvalidArgument at CreateTask (server/tes.go); else kept
        fold_case=False,
        lower_keys=False,
        case_duplicates_refused=False,
        unsupported="keep",
        strict="refuse",
    ),
    ignore_error=True,  # worker/worker.go: ignoreError = d.GetIgnoreError()
    first_executor_only=False,
    upload_on_error=True,  # worker/worker.go: "Upload outputs regardless of executor error"
    # worker/worker.go Run: event.Info("Version", ...) is a SYSTEM_LOG event, appended to the
    # task's system logs (database/boltdb/events.go)
    start_system_log=True,
)

TESK = Profile(
    name="tesk",
    # tesk-api: openapi.taskExecutionService.base-path, default /ga4gh/tes/v1
    base_paths=("/ga4gh/tes/v1",),
    # tesk-api TasksApiController.listTasks takes name_prefix, page_size, page_token, view;
    # TesServiceImpl.listTasks then never uses namePrefix, nor does the Python TESK's
    # ListTesTask.handle_request: no filter at all
    filters=frozenset(),
    tags=listing.funnel_tags,  # unused: no tag filter
    page_size=listing.any_page_size,  # the Kubernetes list limit
    full_pages_get_token=False,  # next_page_token is the Kubernetes list's continue token
    # guess: Kubernetes lists jobs by name (the task id), not by age
    order_by_id=True,
    view=views.tesk_view,  # TesServiceImpl.getTask, TesKubernetesConverter
    # extractExecutorLogFromK8sJobAndPod: exit_code only once the pod terminated, and
    # spring.jackson.default-property-inclusion=non_null drops the null
    running_exit_code="absent",
    canceling=False,  # cancelTask labels the job cancelled: extractStateFromK8sJobs CANCELED
    cancel_final_refused=True,  # CancelNotRunningTask: 400 for COMPLETED_STATES
    file_inputs_refused=False,  # tesk-core filer: file:// from the transfer PVC
    backend=Backend(  # guess: no tesk-api code reads backend_parameters; stored as sent
        fold_case=True,
        lower_keys=False,
        case_duplicates_refused=False,
        unsupported="keep",
        strict="ignore",
    ),
    ignore_error=False,  # taskmaster.py run_executor: a failed executor ends the task
    first_executor_only=False,
    upload_on_error=False,  # taskmaster.py: exit_cancelled before the outputs filer
)

TES_AZURE = Profile(
    name="tes-azure",
    base_paths=("/v1",),  # TaskServiceApi.cs: [Route("/v1/tasks")] and the others
    filters=ALL_FILTERS,  # GenerateSearchPredicates: name prefix, state, tags
    tags=listing.azure_tags,  # ParseZippedTagsFromQuery, then the "backup method"
    page_size=listing.bounded_page_size,  # "pageSize must be greater than 0 and less than 2048"
    full_pages_get_token=False,  # guess: the repository's token only when more remain
    order_by_id=False,  # guess: the repository's order is not documented; newest first
    view=views.spec_view,  # ContractResolvers: the spec's three views
    # guess: TesExecutorLog.ExitCode is int? and Newtonsoft writes nulls by default
    running_exit_code="null",
    canceling=False,  # CancelTaskAsync sets TesState.CANCELED
    cancel_final_refused=False,  # CancelTaskAsync: logged, 200
    file_inputs_refused=True,  # "Input URLs to the local file system are not supported."
    backend=Backend(  # CreateTaskAsync
        fold_case=True,
        lower_keys=True,  # "Force all keys to be lowercase"
        case_duplicates_refused=True,  # "Duplicate backend_parameters were specified"
        unsupported="drop",  # removed before the task is stored
        strict="refuse",  # BadRequest("backend_parameters_strict is set to true and ...")
    ),
    ignore_error=False,  # TesExecutor has no ignore_error; only the first executor runs
    first_executor_only=True,  # TaskToNodeTaskConverter: task.Executors.First()
    upload_on_error=True,  # guess: the node runner's outputs step is not read here
)

PROFILES = {p.name: p for p in (SPEC, FUNNEL, TESK, TES_AZURE)}
DEFAULT = "spec"


def profile_named(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown TES server profile {name!r}: one of {', '.join(PROFILES)}")
    return PROFILES[name]
