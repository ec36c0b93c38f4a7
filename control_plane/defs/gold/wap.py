"""Write-audit-publish for one ``trade_date`` partition of a Dagster-owned Iceberg table.

Readers only ever read ``main``. A run writes the new partition on its own branch (``stage_day``: the
branch and the write are one catalog commit), audits what the branch holds (``read_staged``), and only if
every blocking check passed moves ``main`` to it (``publish``: one commit): a fast-forward when ``main`` has
not moved since the branch was made, else the audited rows are applied to ``main`` as the same
one-partition overwrite (other runs may have rewritten other days meanwhile; this day's content is exactly
what was audited either way). A failed audit drops the branch (``discard``), so the previously published
partition stays as it was.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import TableUpdate, update_table_metadata
from pyiceberg.table.update.snapshot import ManageSnapshots

from control_plane.lake_io import as_day, on_day
from schemas.offsets import PARTITION_PROPERTY

log = logging.getLogger(__name__)

BRANCH_PREFIX = "audit-"
COMMIT_ATTEMPTS = 5

T = TypeVar("T")


@dataclass(frozen=True)
class Staged:
    """A partition written on an audit branch, not visible on ``main``."""

    table: Table
    day: dt.date
    branch: str
    base_snapshot_id: int | None  # main when the branch was made
    snapshot_id: int | None  # the branch head after the write
    rows: pa.Table
    properties: dict[str, str]


class MetadataOnceTransaction(Transaction):
    """pyiceberg's ``Transaction``, computing its view of the table metadata once per staged state.

    pyiceberg 0.12 recomputes ``table_metadata`` on every read: it replays the staged updates and deep-copies
    the whole metadata, snapshot history included, and a partition overwrite reads it dozens of times (one
    stage + publish made 59 copies, now 7; most of a small gold table's stage time, growing with its
    history). Cached on the identity of the table's metadata and of the staged-updates tuple, which pyiceberg
    rebinds on every staged change or refresh: the fix proposed upstream (apache/iceberg-python#3302, #3784).
    What is committed is unchanged (the catalog applies the updates to the metadata it loads itself).
    """

    _metadata_view: tuple[TableMetadata, tuple[TableUpdate, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        if not updates:
            return base  # nothing staged: the table's own (immutable) metadata, as ``table.metadata`` gives it
        view = self._metadata_view
        if view is None or view[0] is not base or view[1] is not updates:
            view = (base, updates, update_table_metadata(base, updates))
            self._metadata_view = view
        return view[2]


def manage_snapshots(table: Table) -> ManageSnapshots:
    """``table.manage_snapshots()`` on a ``MetadataOnceTransaction`` (committed by ``.commit()``)."""
    return ManageSnapshots(transaction=MetadataOnceTransaction(table, autocommit=True))


def overwrite(table: Table, rows: pa.Table, day: dt.date, properties: dict[str, str]) -> None:
    """``table.overwrite`` of partition ``day`` on ``main`` on a ``MetadataOnceTransaction`` (one catalog commit)."""
    with MetadataOnceTransaction(table) as tx:
        tx.overwrite(rows, overwrite_filter=on_day(day), snapshot_properties=properties)


def _main_snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None


def _retrying(table: Table, what: str, attempt_once: Callable[[], T]) -> T:
    """Run a catalog commit, reloading and retrying when another writer's commit won the race."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return attempt_once()
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.info("%s of %s lost a commit race (attempt %d), retrying", what, table.name(), attempt)
            time.sleep(0.2 * attempt)
            table.refresh()
    raise AssertionError("unreachable")


def stage_day(
    table: Table, rows: pa.Table, day: str | dt.date, label: str = "", properties: dict[str, str] | None = None
) -> Staged:
    """Write ``rows`` as partition ``day`` of ``table`` on a new audit branch made from ``main``.

    ``properties`` go into the commit's snapshot summary (with the partition), and reach ``main`` with it.
    """
    day = as_day(day)
    dates = set(pc.unique(rows.column("trade_date")).to_pylist())  # distinct first: a day has 100k+ rows
    if dates - {day}:
        raise ValueError(f"rows for {table.name()} partition {day} carry other trade_dates: {sorted(dates - {day})}")
    branch = f"{BRANCH_PREFIX}{day.isoformat()}-{label + '-' if label else ''}{uuid.uuid4().hex[:8]}"
    summary = {**(properties or {}), PARTITION_PROPERTY: day.isoformat()}

    def write() -> Staged:
        # One catalog commit: the branch is made from main and the partition overwritten on it together.
        # Only this run knows the branch; the race is on the catalog row only, and a lost race reloads
        # the table and stages again.
        with MetadataOnceTransaction(table) as tx:
            if tx.table_metadata.current_snapshot() is None:
                # A branch needs a snapshot to start from: main gets an empty one (readers see no rows).
                tx.append(table.schema().as_arrow().empty_table())
            base = tx.table_metadata.current_snapshot_id
            if base is None:
                raise RuntimeError(f"{'.'.join(table.name())} has no snapshot on main to branch {branch} from")
            ManageSnapshots(tx).create_branch(base, branch).commit()
            tx.overwrite(rows, overwrite_filter=on_day(day), snapshot_properties=summary, branch=branch)
        ref = table.metadata.refs.get(branch)
        return Staged(table, day, branch, base, ref.snapshot_id if ref is not None else base, rows, summary)

    return _retrying(table, f"staging {branch}", write)


def read_staged(staged: Staged, columns: Iterable[str]) -> pa.Table:
    """The staged partition as the audit must see it (the branch head, only ``columns``)."""
    return staged.table.scan(
        row_filter=on_day(staged.day),
        selected_fields=tuple(columns),
        snapshot_id=staged.snapshot_id,
    ).to_arrow()


def _drop_branch(table: Table, branch: str) -> None:
    def drop() -> None:
        if branch in table.metadata.refs:
            manage_snapshots(table).remove_branch(branch).commit()

    _retrying(table, f"removing branch {branch}", drop)


def publish(staged: Staged) -> int | None:
    """Make the audited partition what ``main`` readers see; returns main's new snapshot id."""
    table = staged.table
    if staged.snapshot_id is None or staged.snapshot_id == staged.base_snapshot_id:
        _drop_branch(table, staged.branch)  # the write changed nothing: main already shows these rows
        return _main_snapshot_id(table)
    if _main_snapshot_id(table) == staged.base_snapshot_id:
        try:
            # Compare-and-set on main (the commit asserts main is still at the branch's base): fails,
            # and changes nothing, if any other commit moved main since this run staged.
            manage_snapshots(table).set_current_snapshot(snapshot_id=staged.snapshot_id).remove_branch(staged.branch).commit()
            return _main_snapshot_id(table)
        except CommitFailedException:
            table.refresh()
    else:
        table.refresh()
    # main moved on (another day, another run): apply the audited rows as the same partition overwrite.
    _retrying(table, f"publishing {staged.day}", lambda: overwrite(table, staged.rows, staged.day, staged.properties))
    _drop_branch(table, staged.branch)
    return _main_snapshot_id(table)


def discard(staged: Staged) -> None:
    """Forget a staged partition that failed its audit; ``main`` never saw it."""
    _drop_branch(staged.table, staged.branch)
