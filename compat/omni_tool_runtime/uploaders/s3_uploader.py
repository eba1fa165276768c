"""``S3Uploader(aws_profile=).upload_bytes(...)``: boto3's standard chain, optionally a profile."""

from dataclasses import dataclass

from miniwdl_omnibio.runtime.store import S3Store


@dataclass
class S3Uploader:
    aws_profile: str | None = None

    def upload_bytes(self, *, bucket: str, key: str, data: bytes, content_type: str) -> None:
        S3Store(bucket, "", profile=self.aws_profile or None).put_bytes(data, key, content_type)
