"""Opening the Iceberg catalog the settings point at (SQLite by default, PostgreSQL or REST in production).

Production adds an ``s3://bucket/prefix`` warehouse (any S3 API: AWS, or S3Proxy locally); the S3 endpoint and
keys come from the settings and are handed to pyiceberg here, nowhere else. A catalog that cannot be reached
raises ``CatalogUnreachable`` with one line naming it and its address (password masked), after a bounded wait.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from schemas.settings import Settings

# S3 servers other than AWS (S3Proxy 2.6 here, older MinIO/Ceph) reject the default CRC checksums newer AWS SDKs
# send (501 x-amz-checksum-*, 400 XAmzContentSHA256Mismatch on UploadPart); pyarrow's SDK reads these two.
S3_CHECKSUM_ENV = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}
CONNECT_TIMEOUT_S = 10
CREATE_RACE_ATTEMPTS = 3


class CatalogUnreachable(ConnectionError):
    """The configured catalog did not answer; ``str()`` is one line naming the catalog and its address."""


def catalog_address(settings: Settings) -> str:
    """The catalog's type and URI with any password replaced by ``***`` (fit for logs and errors)."""
    return f"{settings.iceberg_catalog_type} catalog at {mask_password(settings.iceberg_catalog_uri)}"


def mask_password(uri: str) -> str:
    """``postgresql://user:pw@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


def catalog_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg ``load_catalog`` properties: the catalog itself, S3 FileIO settings, REST auth."""
    props = settings.catalog_properties()
    if props["type"] == "sql" and props["uri"].startswith("postgresql") and "connect_timeout" not in props["uri"]:
        # libpq waits for ever on a host that drops packets; a bounded wait turns into CatalogUnreachable.
        props["uri"] += ("&" if "?" in props["uri"] else "?") + f"connect_timeout={CONNECT_TIMEOUT_S}"
    if settings.iceberg_s3_endpoint:
        props["s3.endpoint"] = settings.iceberg_s3_endpoint
    if settings.iceberg_s3_endpoint or settings.iceberg_warehouse.startswith("s3"):
        props["s3.region"] = settings.aws_region
        if settings.aws_access_key_id:
            props["s3.access-key-id"] = settings.aws_access_key_id
        if settings.aws_secret_access_key:
            props["s3.secret-access-key"] = settings.aws_secret_access_key
    if props["type"] == "rest":
        if settings.iceberg_rest_token:
            props["token"] = settings.iceberg_rest_token
        if settings.iceberg_rest_credential:
            props["credential"] = settings.iceberg_rest_credential
    return props


def open_catalog(settings: Settings) -> Catalog:
    """Load the catalog, creating the embedded SQLite file and warehouse folder on first use."""
    props = catalog_properties(settings)
    if props["type"] == "sql" and props["uri"].startswith("sqlite:///"):
        Path(props["uri"][len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if props["type"] == "sql" and props.get("warehouse", "").startswith("file://"):
        Path(props["warehouse"][len("file://"):]).mkdir(parents=True, exist_ok=True)  # a REST server owns its own
    if "s3.endpoint" in props:
        for key, value in S3_CHECKSUM_ENV.items():
            os.environ.setdefault(key, value)  # before pyarrow creates its first S3 client in this process
    for attempt in range(CREATE_RACE_ATTEMPTS):
        try:
            return load_catalog(settings.iceberg_catalog_name, **props)
        except Exception as exc:  # sqlalchemy OperationalError, requests ConnectionError, ...: all mean "not there"
            if _lost_create_race(exc) and attempt + 1 < CREATE_RACE_ATTEMPTS:
                continue  # another process created the SQL catalog's own tables first: they exist now
            if not _is_connection_failure(exc):
                raise
            raise CatalogUnreachable(f"Iceberg {catalog_address(settings)} is unreachable: {_first_line(exc)}") from None
    raise AssertionError("not reached")


def _lost_create_race(exc: BaseException) -> bool:
    """pyiceberg's SQL catalog creates its tables on first open; workers starting together on a fresh PostgreSQL
    database race, and the losers get DuplicateTable / UniqueViolation (pg_type) for ``iceberg_tables``."""
    names = {type(e).__name__ for e in _chain(exc)} | {type(getattr(e, "orig", None)).__name__ for e in _chain(exc)}
    return bool(names & {"DuplicateTable", "UniqueViolation", "IntegrityError"}) or "already exists" in str(exc)


def _is_connection_failure(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    return bool(names & {"OperationalError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionRefusedError"})


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = mask_password(str(getattr(exc, "orig", None) or exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
