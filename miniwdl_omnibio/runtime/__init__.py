"""The OmniBioAI tool runtime: what runs *inside* a tool image.

It reads the environment contract the plugin sets (TOOL_ID, RUN_ID, INPUTS_JSON, RESOURCES_JSON,
RESULT_URI / S3_RESULT_URI) and uploads results.json. Only the standard library is imported here;
boto3 and the Azure SDK are imported when an s3:// or azureblob:// URI is actually used, so the
runtime installs into any image with ``pip install --no-deps miniwdl-omnibio``.
"""

from .contract import CONTRACT_VARIABLES, FILE_SUFFIX, Contract, read_contract
from .store import delete_result, download_result, upload_result, write_result
from .uri import ResultUri, parse_result_uri

__all__ = [
    "Contract",
    "read_contract",
    "CONTRACT_VARIABLES",
    "FILE_SUFFIX",
    "ResultUri",
    "parse_result_uri",
    "upload_result",
    "download_result",
    "delete_result",
    "write_result",
]
