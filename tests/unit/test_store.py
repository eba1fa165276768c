"""The one object-store layer: one credential rule per scheme whoever asks, SDKs imported only
when used, one S3 client per environment, and errors as one line."""

import subprocess
import sys
from unittest.mock import MagicMock

import pytest

from miniwdl_omnibio.runtime import store
from miniwdl_omnibio.runtime.uri import parse_result_uri

AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


def test_importing_the_layer_imports_no_sdk():
    code = (
        "import sys, miniwdl_omnibio.runtime.store\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'azure', 'google')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "opened",
    [
        lambda: store.result_store(parse_result_uri("azureblob://devstoreaccount1/results/x.json")),
        lambda: store.open_store("http://127.0.0.1:10000/devstoreaccount1/results/pre"),
    ],
    ids=["result-uri", "staging-url"],
)
def test_a_connection_string_wins_for_results_and_staging_alike(monkeypatch, opened):
    """Its account key and its endpoint are used."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", AZURITE)
    client = opened().client
    assert client.url == "http://127.0.0.1:10000/devstoreaccount1/results"
    assert "SharedKey" in type(client.credential).__name__


def test_a_staging_url_of_another_account_than_the_connection_strings_is_refused(monkeypatch):
    """A TES server reads the URL the plugin names: it must be where the plugin wrote."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", AZURITE)
    with pytest.raises(
        ValueError,
        match=r"not where AZURE_STORAGE_CONNECTION_STRING writes \(http://127.0.0.1:10000/devstoreaccount1/results\)",
    ):
        store.open_store("https://other.blob.core.windows.net/results/pre")


def test_without_one_the_default_credential_at_the_accounts_endpoint(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_BLOB_ENDPOINT", raising=False)
    result = store.result_store(parse_result_uri("azureblob://acct/results/x.json"))
    assert result.client.url == "https://acct.blob.core.windows.net/results"
    assert type(result.client.credential).__name__ == "DefaultAzureCredential"
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", "https://acct.privatelink.example")
    result = store.result_store(parse_result_uri("azureblob://acct/results/x.json"))
    assert result.client.url == "https://acct.privatelink.example/results"
    staging = store.open_store("https://acct.blob.core.windows.net/results/pre")
    assert staging.client.url == "https://acct.blob.core.windows.net/results"  # the URL itself
    assert type(staging.client.credential).__name__ == "DefaultAzureCredential"


def test_one_s3_client_per_environment_and_retry_count(monkeypatch):
    boto3 = MagicMock()
    boto3.Session.return_value.client.side_effect = lambda *args, **kwargs: object()
    monkeypatch.setitem(sys.modules, "boto3", boto3)
    first, again = store.s3_client(), store.s3_client()
    assert first is again
    assert store.s3_client(retries=3) is not first
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    assert store.s3_client() is not first


def test_s3_delete_raises_the_per_key_errors_in_the_answer(monkeypatch):
    """DeleteObjects answers 200 and lists the keys it could not delete (AccessDenied)."""
    boto3 = MagicMock()
    monkeypatch.setitem(sys.modules, "boto3", boto3)
    client = boto3.Session.return_value.client.return_value
    client.delete_objects.return_value = {
        "Errors": [{"Key": "r/results.json", "Code": "AccessDenied", "Message": "Access Denied"}]
    }
    with pytest.raises(store.StoreError) as raised:
        store.delete_result("s3://bucket/r/results.json")
    assert str(raised.value) == (
        "could not delete r/results.json in s3://bucket: AccessDenied: Access Denied"
    )
    client.delete_objects.return_value = {}
    store.delete_result("s3://bucket/r/results.json")


def test_a_missing_sdk_names_its_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(RuntimeError, match=r"azure-storage-blob not installed.*\[azure\]"):
        store.download_result("azureblob://acct/results/x.json")
