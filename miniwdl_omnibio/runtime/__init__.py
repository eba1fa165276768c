"""The OmniBioAI tool runtime: what runs *inside* a tool image.

It reads the environment contract the plugin sets (TOOL_ID, RUN_ID, INPUTS_JSON, RESOURCES_JSON,
RESULT_URI / S3_RESULT_URI, RESULT_MAX_BYTES, PATH_MAPPING_RULES) and uploads results.json. Only
the standard library is imported here; boto3, the Azure SDK and google-cloud-storage are imported
when an s3://, azureblob:// or gs:// URI is actually used, so the runtime installs into any image
with ``pip install --no-deps miniwdl-omnibio``.
"""

from .contract import CONTRACT_VARIABLES, FILE_SUFFIX, Contract, map_path, read_contract
from .provenance import SIGNING_KEY_VARIABLE
from .result import ResultTooLarge, write_result
from .store import delete_result, download_result, upload_result
from .uri import ResultUri, parse_result_uri

__all__ = [
    "Contract",
    "read_contract",
    "map_path",
    "CONTRACT_VARIABLES",
    "FILE_SUFFIX",
    "SIGNING_KEY_VARIABLE",
    "ResultUri",
    "parse_result_uri",
    "upload_result",
    "download_result",
    "delete_result",
    "write_result",
    "ResultTooLarge",
]
