"""``S3Uploader(aws_profile=).upload_bytes(...)``: boto3's standard chain, optionally a profile."""

from dataclasses import dataclass

from miniwdl_omnibio.runtime.store import put_s3


@dataclass
class S3Uploader:
    aws_profile: str | None = None

    def upload_bytes(self, *, bucket: str, key: str, data: bytes, content_type: str) -> None:
        put_s3(bucket, key, data, content_type, profile=self.aws_profile or None)
