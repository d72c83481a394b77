"""A small object-store interface over a local folder or an S3 prefix (boto3).

Ingest, the lake and the quarantine use the same code in both environments; only the URI differs.
Keys are always ``/``-separated and relative to the store's root.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

STAGING = ".staging"
"""Folder at a local store's root where writes are staged before their atomic rename; never listed."""

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One name at the top of a store, as the store itself sees it (no byte of it read)."""

    name: str
    kind: Literal["file", "folder", "symlink", "special", "unreadable"]
    size: int = 0


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

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes from the store's metadata (stat / S3 HEAD): nothing is read."""

    @abstractmethod
    def entries(self) -> builtins.list[Entry]:
        """Names at the top of the store (not recursive), sorted; folders and links are reported as such."""

    @abstractmethod
    def version(self, key: str) -> str:
        """A token that changes whenever the object at ``key`` is replaced (mtime+size / ETag)."""

    def sha256(self, key: str) -> str:
        """Hex digest of an object, read in chunks (memory bounded whatever its size)."""
        return hashlib.sha256(self.get(key)).hexdigest()

    def copy_to(self, key: str, dest: ObjectStore, dest_key: str) -> None:
        """Copy one object to another store (atomically there)."""
        dest.put(dest_key, self.get(key))

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
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if f"/{STAGING}/" not in f"/{k}")

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def version(self, key: str) -> str:
        info = self._path(key).stat()
        return f"{info.st_mtime_ns}-{info.st_size}-{info.st_ino}"

    def entries(self) -> builtins.list[Entry]:
        if not self.root.is_dir():
            return []
        found = []
        with os.scandir(self.root) as scan:
            for item in scan:
                if item.name == STAGING:
                    continue
                found.append(_local_entry(Path(item.path), item.name))
        return sorted(found, key=lambda e: e.name)

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self._path(key).open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def copy_to(self, key: str, dest: ObjectStore, dest_key: str) -> None:
        if isinstance(dest, LocalStore):
            with self._path(key).open("rb") as source:
                dest._write_atomic(dest_key, lambda out: shutil.copyfileobj(source, out, _CHUNK))
        elif isinstance(dest, S3Store):
            with self._path(key).open("rb") as source:
                dest.client.upload_fileobj(source, dest.bucket, dest._key(dest_key))
        else:
            super().copy_to(key, dest, dest_key)

    def put(self, key: str, data: bytes) -> None:
        self._write_atomic(key, lambda out: out.write(data))

    def _write_atomic(self, key: str, write: Any) -> None:
        """Stage the bytes OUTSIDE every partition, fsync, then rename into place.

        Readers glob partitions (``date=*/data.parquet``); a write cut short (disk full, a killed worker)
        leaves at most a file under ``.staging/`` at the store's root, which no reader lists.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.root / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        tmp = staging / f"{path.name}.{os.getpid()}.{os.urandom(6).hex()}"
        try:
            with tmp.open("wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)  # atomic on one filesystem: readers see the old or the new object
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

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


def _local_entry(path: Path, name: str) -> Entry:
    """Classify a top-level name without following links or reading content."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return Entry(name, "symlink")
    if stat.S_ISDIR(info.st_mode):
        return Entry(name, "folder")
    if not stat.S_ISREG(info.st_mode):
        return Entry(name, "special")  # a FIFO or device: opening it could block forever
    if not os.access(path, os.R_OK):
        return Entry(name, "unreadable", info.st_size)
    return Entry(name, "file", info.st_size)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (the directory entry) as well as the data."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)  # one PUT: atomic

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def version(self, key: str) -> str:
        return str(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ETag"]).strip('"')

    def entries(self) -> builtins.list[Entry]:
        base = f"{self.prefix}/" if self.prefix else ""
        found: builtins.list[Entry] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                found.append(Entry(common["Prefix"][len(base) :].rstrip("/"), "folder"))
            for item in page.get("Contents", []):
                name = item["Key"][len(base) :]
                if name:
                    found.append(Entry(name, "file", int(item.get("Size", 0))))
        return sorted(found, key=lambda e: e.name)

    def copy_to(self, key: str, dest: ObjectStore, dest_key: str) -> None:
        if isinstance(dest, S3Store):  # server-side copy: no byte passes through the worker
            source = {"Bucket": self.bucket, "Key": self._key(key)}
            dest.client.copy(source, dest.bucket, dest._key(dest_key), SourceClient=self.client)
        elif isinstance(dest, LocalStore):
            dest._write_atomic(dest_key, lambda out: self.client.download_fileobj(self.bucket, self._key(key), out))
        else:
            super().copy_to(key, dest, dest_key)

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        for chunk in body.iter_chunks(_CHUNK):
            digest.update(chunk)
        return digest.hexdigest()

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
