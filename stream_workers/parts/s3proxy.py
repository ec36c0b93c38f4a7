"""S3Proxy (``org.gaul:s3proxy``, Apache 2.0): a real S3 API endpoint on loopback with a filesystem backend, so
an ``s3://bucket/prefix`` warehouse works on one machine exactly as it would on AWS.

The jar (one self-contained ``jar-with-dependencies``) is fetched with Maven from ``deploy/s3proxy-pom.xml``
into ``.cache/s3proxy/libs``. Newer AWS SDKs need ``schemas.catalog.S3_CHECKSUM_ENV`` to talk to it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from schemas.catalog import S3_CHECKSUM_ENV
from schemas.settings import REPO_ROOT
from stream_workers.parts.process import (
    PartError,
    alive_process,
    fetch_with_maven,
    launch,
    require_free_port,
    require_java,
    stop_process,
    wait_ready,
)

POM = REPO_ROOT / "deploy" / "s3proxy-pom.xml"
LIBS = REPO_ROOT / ".cache" / "s3proxy" / "libs"
JAR_GLOB = "s3proxy-*-jar-with-dependencies.jar"
MAIN_CLASS = "org.gaul.s3proxy.Main"


@dataclass(frozen=True)
class S3ProxyConfig:
    """``base_dir`` holds ``blobs/`` (the buckets), ``s3proxy.properties`` (private: it has the keys), log, pid."""

    base_dir: Path
    port: int = 9400
    host: str = "127.0.0.1"
    access_key: str = "ticklake"
    secret_key: str = field(default="ticklake-secret", repr=False)
    bucket: str = "ticklake"
    region: str = "us-east-1"
    heap: str = "256m"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def blobs_dir(self) -> Path:
        return self.base_dir / "blobs"

    @property
    def properties_file(self) -> Path:
        return self.base_dir / "s3proxy.properties"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "s3proxy.log"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "s3proxy.pid"


def fetch(force: bool = False) -> Path:
    return fetch_with_maven(POM, LIBS, JAR_GLOB, force=force)


def properties(config: S3ProxyConfig) -> str:
    lines = [
        f"s3proxy.endpoint={config.endpoint}",
        "s3proxy.authorization=aws-v2-or-v4",
        f"s3proxy.identity={config.access_key}",
        f"s3proxy.credential={config.secret_key}",
        "jclouds.provider=filesystem-nio2",
        f"jclouds.filesystem.basedir={config.blobs_dir}",
        # The nio2 provider refuses to start without these, whatever their value.
        "jclouds.identity=local",
        "jclouds.credential=local",
    ]
    return "\n".join(lines) + "\n"


def start(config: S3ProxyConfig, wait_s: float = 60.0) -> int:
    """Start S3Proxy (fetching its jar on first use), wait until it answers HTTP, create the bucket; its pid."""
    process = alive_process(config.pid_file, MAIN_CLASS)
    if process is None:
        require_free_port("S3Proxy", config.host, config.port)
        jar = next(fetch().glob(JAR_GLOB))
        java = require_java()
        config.blobs_dir.mkdir(parents=True, exist_ok=True)
        config.properties_file.touch(mode=0o600)
        config.properties_file.write_text(properties(config))
        command = [java, f"-Xmx{config.heap}", "-cp", str(jar), MAIN_CLASS, "--properties", str(config.properties_file)]
        config.pid_file.write_text(f"{launch(command, cwd=config.base_dir, log_file=config.log_file)}\n")
    wait_ready(lambda: _answers(config), what=f"S3Proxy on {config.endpoint}", timeout_s=wait_s,
               alive=lambda: alive_process(config.pid_file, MAIN_CLASS) is not None, log_file=config.log_file)
    create_bucket(config)
    found = alive_process(config.pid_file, MAIN_CLASS)
    assert found is not None
    pid: int = found.pid  # psutil is untyped
    return pid


def stop(config: S3ProxyConfig, timeout_s: float = 20.0) -> bool:
    stopped = stop_process(alive_process(config.pid_file, MAIN_CLASS), timeout_s=timeout_s)
    config.pid_file.unlink(missing_ok=True)
    return stopped


def pid(config: S3ProxyConfig) -> int | None:
    process = alive_process(config.pid_file, MAIN_CLASS)
    return process.pid if process is not None else None


def create_bucket(config: S3ProxyConfig) -> None:
    """Create ``config.bucket`` if missing (pyarrow's S3 client: the same SDK the workers use)."""
    from pyarrow import fs

    for key, value in S3_CHECKSUM_ENV.items():
        os.environ.setdefault(key, value)
    s3 = fs.S3FileSystem(access_key=config.access_key, secret_key=config.secret_key, endpoint_override=config.endpoint,
                         scheme="http", region=config.region, allow_bucket_creation=True)
    try:
        if s3.get_file_info(config.bucket).type == fs.FileType.NotFound:
            s3.create_dir(config.bucket)
    except OSError as exc:
        raise PartError(f"creating bucket {config.bucket!r} on S3Proxy at {config.endpoint} failed: {exc}") from None


def _answers(config: S3ProxyConfig) -> bool:
    try:
        urllib.request.urlopen(config.endpoint + "/", timeout=2)
    except urllib.error.HTTPError:
        return True  # 403 to an anonymous request: the server is up
    return True
