"""omnibio_azurebatch at start-up: credentials, the pool (found, or created from pool_spec), and
the largest task it can run. Every problem is one line naming the config key."""

import base64
import logging
import os
import re
from typing import Any

from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _

from ...settings import ConfigError
from .settings import AzureBatchSettings
from .status import describe_error, enum_text, error_code

GiB = 1 << 30
# vCPUs are the number after the family letters in a VM size name (Standard_D4s_v3 -> 4); memory
# per vCPU by family, for pools whose nodes' size the config does not state (max_memory)
VM_SIZE = re.compile(r"^(?:standard_|basic_)?([a-z]+?)(\d+)", re.IGNORECASE)
GIB_PER_VCPU = {"a": 2, "b": 4, "d": 4, "e": 8, "f": 2, "h": 4, "l": 8, "m": 14, "n": 7}
# N-series sizes carry GPUs (Microsoft's "GPU optimized virtual machine sizes": NC, ND, NG, NV)
GPU_FAMILY = re.compile(r"^(?:standard_)?n[cdgv]", re.IGNORECASE)
POOL_SPEC_KEYS = (
    "vm_size",
    "image",
    "node_agent_sku_id",
    "dedicated_nodes",
    "low_priority_nodes",
    "task_slots_per_node",
    "container_registries",
    "container_image_names",
    "mount_configuration",
)


def node_size(vm_size: str) -> tuple[int, int] | None:
    """(vCPUs, memory bytes) estimated from an Azure VM size name, None if it has no such shape."""
    match = VM_SIZE.match(vm_size or "")
    if not match:
        return None
    family, vcpus = match.group(1).lower(), int(match.group(2))
    return vcpus, vcpus * GIB_PER_VCPU.get(family[0], 4) * GiB


def _registry(
    settings: AzureBatchSettings, entry: dict[str, Any]
) -> batch_models.ContainerRegistryReference:
    variable, identity = entry.get("password_env"), entry.get("identity_reference")
    if variable and not os.environ.get(variable):
        problem = f"container registry password variable {variable} is not set"
        raise settings.fail("pool_spec", problem)
    return batch_models.ContainerRegistryReference(
        registry_server=entry.get("registry_server"),
        username=entry.get("username"),
        password=os.environ[variable] if variable else None,
        identity_reference=(
            batch_models.BatchNodeIdentityReference(resource_id=identity) if identity else None
        ),
    )


def pool_options(settings: AzureBatchSettings, pool_id: str) -> batch_models.BatchPoolCreateOptions:
    """pool_spec: the few settings an auto-created pool needs, as BatchPoolCreateOptions."""
    spec = settings.pool_spec
    for required in ("image", "vm_size", "node_agent_sku_id"):
        if not spec.get(required):
            raise settings.fail("pool_spec", f"needs {required!r} to create a pool")
    if not isinstance(spec["image"], dict):
        raise settings.fail(
            "pool_spec",
            "'image' must be an object: publisher, offer, sku, version "
            "(or virtual_machine_image_id)",
        )
    try:
        dedicated = int(spec.get("dedicated_nodes", 0))
        low = int(spec.get("low_priority_nodes", 0))
        if dedicated + low < 1:
            raise settings.fail("pool_spec", "needs dedicated_nodes or low_priority_nodes above 0")
        registries = [_registry(settings, r) for r in spec.get("container_registries", [])]
        containers = batch_models.BatchContainerConfiguration(
            type="dockerCompatible",
            container_image_names=spec.get("container_image_names") or None,
            container_registries=registries or None,
        )
        mounts = [batch_models.MountConfiguration(m) for m in spec.get("mount_configuration", [])]
        return batch_models.BatchPoolCreateOptions(
            id=pool_id,
            vm_size=spec["vm_size"],
            virtual_machine_configuration=batch_models.VirtualMachineConfiguration(
                image_reference=batch_models.BatchVmImageReference(**spec["image"]),
                node_agent_sku_id=spec["node_agent_sku_id"],
                container_configuration=containers,
            ),
            target_dedicated_nodes=dedicated,
            target_low_priority_nodes=low,
            task_slots_per_node=int(spec.get("task_slots_per_node", 1)),
            mount_configuration=mounts or None,
        )
    except (TypeError, ValueError, AttributeError) as exn:
        raise settings.fail("pool_spec", f"invalid value: {exn}") from None


def credential(settings: AzureBatchSettings) -> tuple[str, Any]:
    """(account name, credential); the shared key is read from its variable, never logged."""
    account = settings.account_name or settings.host.split(".")[0]
    if settings.auth == "entra":  # managed identity, workload identity, az login
        from azure.identity import DefaultAzureCredential

        return account, DefaultAzureCredential()
    if not (settings.account_name or settings.host.endswith(".batch.azure.com")):
        raise settings.fail(
            "account_name",
            "is required with auth = shared_key when account_url is not "
            "<account>.<region>.batch.azure.com",
        )
    variable = settings.account_key_env
    key = os.environ.get(variable, "").strip()
    problem = "" if key else "(the account's shared key) is not set"
    try:
        base64.b64decode(key, validate=True)
    except ValueError:  # binascii.Error is one
        problem = "does not hold a base64 Batch account key"
    if problem:
        raise settings.fail("account_key_env", f"environment variable {variable} {problem}")
    return account, AzureNamedKeyCredential(account, key)


def find_pool(
    client: BatchClient, settings: AzureBatchSettings, logger: logging.Logger
) -> batch_models.BatchPool:
    """The pool, created from pool_spec when missing; every start-up problem is one line."""
    account_url, pool_id, spec = settings.account_url, settings.pool_id, settings.pool_spec
    unknown = sorted(set(spec) - set(POOL_SPEC_KEYS))
    if unknown:
        raise settings.fail(
            "pool_spec", f"unknown key(s) {', '.join(unknown)}; known: {', '.join(POOL_SPEC_KEYS)}"
        )
    try:
        pool = _find_or_create(client, settings, logger)
    except HttpResponseError as exn:  # ClientAuthenticationError (no token at all) is one too
        code = error_code(exn)
        if exn.status_code in (None, 401, 403) or code == "AuthenticationFailed":
            raise _auth_failure(settings, exn) from None
        if code == "PoolNotFound":
            raise settings.fail(
                "pool_id",
                f"pool {pool_id!r} does not exist in {account_url}; create it (README: Azure "
                "setup) or set pool_spec",
            ) from None
        raise settings.fail(
            "pool_spec" if spec else "pool_id", f"Azure Batch refused: {describe_error(exn)}"
        ) from None
    except AzureError as exn:
        raise settings.fail(
            "account_url", f"cannot reach Azure Batch at {account_url} ({describe_error(exn)})"
        ) from None
    if enum_text(pool.state) == "deleting":
        raise settings.fail("pool_id", f"pool {pool_id!r} is being deleted")
    vm = pool.virtual_machine_configuration
    if not vm or not vm.container_configuration:
        raise settings.fail(
            "pool_id",
            f"pool {pool_id!r} has no container configuration; tasks need a pool created with "
            "containerConfiguration (README: Azure setup)",
        )
    nodes = pool.target_dedicated_nodes or pool.target_low_priority_nodes or pool.enable_auto_scale
    if not nodes:
        logger.warning(
            _("Azure Batch pool has no nodes; tasks will wait until it is resized", pool=pool_id)
        )
    return pool


def _find_or_create(
    client: BatchClient, settings: AzureBatchSettings, logger: logging.Logger
) -> batch_models.BatchPool:
    pool_id = settings.pool_id
    try:
        return client.get_pool(pool_id)
    except HttpResponseError as exn:
        if error_code(exn) != "PoolNotFound" or not settings.pool_spec:
            raise
    logger.log(NOTICE_LEVEL, _("creating Azure Batch pool from pool_spec", pool=pool_id))
    try:
        client.create_pool(pool_options(settings, pool_id))
    except HttpResponseError as exn:
        if error_code(exn) != "PoolExists":  # else another run created it meanwhile
            raise
    return client.get_pool(pool_id)


def _auth_failure(settings: AzureBatchSettings, exn: HttpResponseError) -> ConfigError:
    reason = describe_error(exn)
    if settings.auth == "shared_key":
        return settings.fail(
            "account_key_env",
            f"Azure Batch rejected the shared key in ${settings.account_key_env} ({reason}); use a "
            "current key of the account named in account_name",
        )
    if exn.status_code is None:
        problem = (
            f"no Entra ID token for Azure Batch ({reason}); set up a managed identity, workload "
            "identity or az login"
        )
    else:
        problem = (
            f"Azure Batch did not accept the Entra ID token ({reason}); give the identity a Batch "
            "data-plane role on the account"
        )
    return settings.fail("auth", problem)


def pool_limits(settings: AzureBatchSettings, pool: batch_models.BatchPool) -> dict[str, int]:
    """The largest task: max_cpu / max_memory, else estimated from the pool's vmSize."""
    estimated = node_size(pool.vm_size or "") or (0, 0)
    cpu, memory = settings.max_cpu or estimated[0], settings.max_memory or estimated[1]
    for value, key, what in ((cpu, "max_cpu", "vCPUs"), (memory, "max_memory", "memory")):
        if not value:
            problem = f"cannot tell the {what} of vmSize {pool.vm_size!r}; set {key}"
            raise settings.fail(key, problem)
    return {"cpu": cpu, "mem_bytes": memory}
