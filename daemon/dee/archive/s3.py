"""The S3 side of the archive: where objects go (`audit.archive_to`), writing, reading back.

aiobotocore rather than boto3 in a thread: every other service DEE talks to is reached from
one asyncio loop, and an object is streamed in chunks both ways (a partition is never held
whole in memory: large objects go up in multipart parts, and come down as a stream). The
endpoint, region and credentials come from `[audit]` when set, else from botocore's standard
chain (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `AWS_REGION`, profiles, instance roles). No
credential is ever part of a message: errors name the bucket, the key and S3's error code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from dee.config import AuditConfig
from dee.errors import ArchiveError, ConfigError, ServiceUnavailableError
from dee.redact import redact

PART_BYTES = 64 * 1024 * 1024  # objects larger than this go up in parts of this size (S3 allows 5 MiB to 5 GiB)
READ_CHUNK = 1024 * 1024
_CLIENT_CONFIG = AioConfig(connect_timeout=10, read_timeout=120, retries={"max_attempts": 5, "mode": "standard"})


class Location(NamedTuple):
    bucket: str
    prefix: str  # without slashes at either end; may be empty

    @classmethod
    def parse(cls, uri: str) -> Location:
        rest = uri.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not uri.startswith("s3://") or not bucket:
            raise ConfigError(f"audit.archive_to: an S3 URI such as s3://bucket/prefix, not {uri!r}")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class Bucket:
    """One bucket through an open client: put a file or bytes, stream or read an object."""

    def __init__(self, client: Any, location: Location, endpoint: str) -> None:
        self._client = client
        self.location = location
        self.endpoint = endpoint

    async def put_bytes(self, key: str, data: bytes) -> None:
        async with self._calling(key):
            await self._client.put_object(Bucket=self.location.bucket, Key=key, Body=data)

    async def put_file(self, key: str, path: Path) -> None:
        if (await asyncio.to_thread(path.stat)).st_size <= PART_BYTES:
            await self.put_bytes(key, await asyncio.to_thread(path.read_bytes))
            return
        bucket = self.location.bucket
        async with self._calling(key):
            upload = (await self._client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
            try:
                parts = []
                with path.open("rb") as file:
                    number = 1
                    while chunk := await asyncio.to_thread(file.read, PART_BYTES):
                        done = await self._client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk)
                        parts.append({"PartNumber": number, "ETag": done["ETag"]})
                        number += 1
                await self._client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                             MultipartUpload={"Parts": parts})  # fmt: skip
            except BaseException:
                await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
                raise

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, as S3 holds them."""
        async with self._calling(key):
            body = (await self._client.get_object(Bucket=self.location.bucket, Key=key))["Body"]
            async with body:  # (older aiobotocore's StreamingBody enters as its raw response: not `as`)
                while chunk := await body.read(READ_CHUNK):
                    yield chunk

    async def read(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.stream(key)])

    @asynccontextmanager
    async def _calling(self, key: str) -> AsyncIterator[None]:
        """S3's refusals as ArchiveError (code and message, naming the object), an unreachable
        endpoint as ServiceUnavailableError, missing credentials as ConfigError."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ArchiveError(f"{self.location.uri(key)}: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")) from None
        except NoCredentialsError:
            raise ConfigError("no S3 credentials: set audit.s3_access_key_id and audit.s3_secret_access_key, "
                              "or the standard AWS variables") from None  # fmt: skip
        except EndpointConnectionError as exc:
            raise ServiceUnavailableError("S3", self.endpoint, "connection failed") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailableError("S3", self.endpoint, type(exc).__name__) from exc


@asynccontextmanager
async def open_bucket(audit: AuditConfig) -> AsyncIterator[Bucket]:
    """The bucket of `audit.archive_to`, through a client configured from `[audit]`."""
    if audit.archive_to is None:
        raise ConfigError("audit.archive_to is not set: there is no archive to read or write")
    location = Location.parse(audit.archive_to)
    options: dict[str, Any] = {"endpoint_url": audit.s3_endpoint_url, "region_name": audit.s3_region, "config": _CLIENT_CONFIG}
    if audit.s3_access_key_id is not None:
        options |= {"aws_access_key_id": audit.s3_access_key_id, "aws_secret_access_key": audit.s3_secret_access_key}
    async with get_session().create_client("s3", **options) as client:
        yield Bucket(client, location, redact(audit.s3_endpoint_url or client.meta.endpoint_url))
