"""A real S3-compatible server for tests: `moto_server` (moto[server]) as a child process on
a free loopback port, with a fresh bucket per use.

It speaks S3's HTTP API (SigV4, presigned POSTs, multipart uploads), so the S3 file store
is tested over the wire exactly as against AWS or MinIO, never with a patched client.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import httpx
import pytest

from api.devservices import free_port, log_tail, spawn, stop_process

ACCESS_KEY = "switchyard-test"
SECRET_KEY = "switchyard-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    log_path: Path

    def client(self) -> object:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def new_bucket(self) -> str:
        bucket = f"sy-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        return bucket

    def env(self, bucket: str, prefix: str = "files") -> dict[str, str]:
        """What a Switchyard process needs to use `bucket` as its file store."""
        return {"FILE_STORE_URL": f"s3://{bucket}/{prefix}",
                "FILE_STORE_ENDPOINT_URL": self.endpoint_url,
                "FILE_STORE_REGION": REGION,
                "FILE_STORE_ACCESS_KEY_ID": ACCESS_KEY,
                "FILE_STORE_SECRET_ACCESS_KEY": SECRET_KEY}


def _moto_server() -> str:
    beside_python = Path(sys.executable).with_name("moto_server")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("moto_server")
    if found is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the session; tests isolate themselves with `new_bucket()`."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    process = spawn([_moto_server(), "-H", "127.0.0.1", "-p", str(port)], log_path=log_path)
    server = S3Server(f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto_server exited with {process.returncode}:\n"
                            f"{log_tail(log_path)}", pytrace=False)
            try:
                if httpx.get(f"{server.endpoint_url}/moto-api/", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"moto_server did not answer in 30 s:\n{log_tail(log_path)}",
                            pytrace=False)
            time.sleep(0.1)
        yield server
    finally:
        stop_process(process, timeout_s=5)
