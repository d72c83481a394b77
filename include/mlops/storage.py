"""A small object-store interface over a local folder or an S3 prefix (boto3).

Ingest, the lake and the quarantine use the same code in both environments; only the URI differs.
Keys are always ``/``-separated and relative to the store's root.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ObjectStore(ABC):
    """Minimal blob store: enough for content-addressed raw data and parquet partitions."""

    uri: str

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write once: immutable stores never overwrite. Returns True when written."""
        if self.exists(key):
            return False
        self.put(key, data)
        return True

    def child(self, prefix: str) -> ObjectStore:
        return open_store(f"{self.uri.rstrip('/')}/{prefix.strip('/')}")

    def local_path(self, key: str) -> Path | None:
        """Filesystem path of a key, when the store is local (lets pandas/Feast read in place)."""
        return None


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise ValueError(f"key escapes the store root: {key!r}")
        return path

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.exists():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written object

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def move(self, key: str, dest: ObjectStore, dest_key: str) -> None:
        """Copy then delete; used only for landing files, never for raw objects."""
        dest.put(dest_key, self.get(key))
        self._path(key).unlink()

    def remove_tree(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str, client: Any | None = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint = os.environ.get("MLOPS_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = client or boto3.client("s3", endpoint_url=endpoint)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix)
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                keys.append(item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"])
        return sorted(keys)

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return body

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def open_store(uri: str) -> ObjectStore:
    """``s3://bucket/prefix`` → S3Store; anything else is a local folder."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme == "file" else uri))
    raise ValueError(f"unsupported store URI {uri!r}: use a local path or s3://bucket/prefix")
