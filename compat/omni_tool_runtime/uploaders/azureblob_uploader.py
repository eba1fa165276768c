"""``AzureBlobUploader(account_name=, auth=, connection_string=)``: a connection string, or
azure-identity's default chain (managed identity) at the account's blob endpoint."""

from dataclasses import dataclass

from miniwdl_omnibio.runtime.store import AzureBlobStore, azure_account_url

AUTH_MODES = ("managed_identity", "connection_string")


@dataclass
class AzureBlobUploader:
    account_name: str
    auth: str = "managed_identity"
    connection_string: str | None = None

    def _store(self, container: str) -> AzureBlobStore:
        if self.auth == "connection_string" and not self.connection_string:
            raise RuntimeError(
                "AzureBlobUploader: connection_string auth requires connection_string"
                " (or AZURE_STORAGE_CONNECTION_STRING)"
            )
        # names the mode, never the connection string
        print(f"[azureblob] account {self.account_name}, auth {self.auth}", flush=True)
        use_string = self.connection_string if self.auth == "connection_string" else None
        account_url = azure_account_url(self.account_name)
        return AzureBlobStore(account_url, container, "", None, use_string)

    def upload_bytes(
        self, *, container: str, blob_path: str, data: bytes, content_type: str
    ) -> None:
        container = container.lower()  # Azure container names are lower case
        print(f"[azureblob] uploading {container}/{blob_path}", flush=True)
        self._store(container).put_bytes(data, blob_path, content_type)
