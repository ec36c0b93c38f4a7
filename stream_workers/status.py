"""``ticklake status``: what each streaming table holds, how far behind Kafka it is, and whether every
message is accounted for.

Accounting per topic, judged on the offsets each table has recorded (so it holds while workers run):
  bronze:  offsets bronze covers  = bronze rows + dead letters below those offsets
  silver:  bronze rows silver covers = silver rows + rejects + duplicates (counted at commit)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from schemas.offsets import recorded_counters, recorded_offsets
from schemas.tables.bronze import BRONZE_BY_TOPIC, DEAD_LETTERS
from schemas.tables.silver import SILVER_BY_TOPIC, SILVER_REJECTS
from schemas.tables.spec import TableSpec, ensure_table
from schemas.topics import RAW_TOPICS


@dataclass
class TableStatus:
    name: str
    snapshot_id: int | None
    rows: int
    files: int
    offsets: dict[int, int]
    lag: int | None


@dataclass
class TopicAccount:
    topic: str
    produced: int | None
    bronze_covered: int
    bronze_rows: int
    dead_letters: int
    silver_covered_bronze_rows: int
    silver_rows: int
    rejects: int
    duplicates: int

    @property
    def bronze_balanced(self) -> bool:
        return self.bronze_covered == self.bronze_rows + self.dead_letters

    @property
    def silver_balanced(self) -> bool:
        return self.silver_covered_bronze_rows == self.silver_rows + self.rejects + self.duplicates


@dataclass
class LakeStatus:
    tables: list[TableStatus] = field(default_factory=list)
    accounts: list[TopicAccount] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return all(a.bronze_balanced and a.silver_balanced for a in self.accounts)

    def lines(self) -> list[str]:
        out = [f"{'table':<28} {'snapshot':>20} {'rows':>12} {'files':>6} {'lag':>10}  offsets"]
        for t in self.tables:
            lag = "-" if t.lag is None else f"{t.lag:,d}"
            out.append(f"{t.name:<28} {t.snapshot_id or '-':>20} {t.rows:>12,d} {t.files:>6} {lag:>10}  {t.offsets}")
        out.append("")
        for a in self.accounts:
            produced = "?" if a.produced is None else f"{a.produced:,d}"
            mark = "ok" if a.bronze_balanced else "ERROR: MISMATCH"
            out.append(
                f"{a.topic}: produced {produced}; bronze covers {a.bronze_covered:,d} = "
                f"{a.bronze_rows:,d} bronze rows + {a.dead_letters:,d} dead letters [{mark}]"
            )
            mark = "ok" if a.silver_balanced else "ERROR: MISMATCH"
            out.append(
                f"{' ' * len(a.topic)}  silver covers {a.silver_covered_bronze_rows:,d} bronze rows = "
                f"{a.silver_rows:,d} silver + {a.rejects:,d} rejects + {a.duplicates:,d} duplicates [{mark}]"
            )
        return out


def _covered(rows: pa.Table, offsets: dict[int, int]) -> int:
    """Rows whose (partition, offset) lies below the recorded next offset of its partition."""
    if rows.num_rows == 0 or not offsets:
        return 0
    parts = rows["kafka_partition"].to_numpy()
    offs = rows["kafka_offset"].to_numpy()
    limit = np.full(int(max(parts.max(), max(offsets))) + 1, -1, dtype=np.int64)
    for p, o in offsets.items():
        limit[p] = o
    return int((offs < limit[parts]).sum())


def _coordinates(spec: TableSpec, catalog: Catalog, topic_column: str | None = None, topic: str | None = None) -> pa.Table:
    table = ensure_table(catalog, spec)
    if table.current_snapshot() is None:
        return pa.table({"kafka_partition": pa.array([], pa.int32()), "kafka_offset": pa.array([], pa.int64())})
    columns = ("kafka_partition", "kafka_offset")
    if topic_column:
        return table.scan(row_filter=EqualTo(topic_column, topic), selected_fields=columns).to_arrow()
    return table.scan(selected_fields=columns).to_arrow()


def _table_status(catalog: Catalog, spec: TableSpec, topic: str | None, highs: dict[int, int] | None) -> TableStatus:
    table = ensure_table(catalog, spec)
    snap = table.current_snapshot()
    summary = snap.summary if snap is not None and snap.summary is not None else None
    rows = int(summary.get("total-records", 0)) if summary else 0
    files = int(summary.get("total-data-files", 0)) if summary else 0
    offsets = recorded_offsets(table).get(topic, {}) if topic else {}
    lag = None
    if highs is not None and topic:
        lag = sum(max(0, high - offsets.get(p, 0)) for p, high in highs.items())
    return TableStatus(spec.name, None if snap is None else snap.snapshot_id, rows, files, offsets, lag)


def lake_status(catalog: Catalog, high_watermarks: dict[str, dict[int, int]] | None = None) -> LakeStatus:
    status = LakeStatus()
    for topic in RAW_TOPICS:
        highs = None if high_watermarks is None else high_watermarks.get(topic)
        bronze_spec, silver_spec = BRONZE_BY_TOPIC[topic], SILVER_BY_TOPIC[topic]
        bronze_status = _table_status(catalog, bronze_spec, topic, highs)
        silver_status = _table_status(catalog, silver_spec, topic, highs)
        status.tables += [bronze_status, silver_status]
        bronze_rows = _coordinates(bronze_spec, catalog)
        dead_rows = _coordinates(DEAD_LETTERS, catalog, "source_topic", topic)
        reject_rows = _coordinates(SILVER_REJECTS, catalog, "source_topic", topic)
        silver_offsets = silver_status.offsets
        status.accounts.append(
            TopicAccount(
                topic=topic,
                produced=None if highs is None else sum(highs.values()),
                bronze_covered=sum(bronze_status.offsets.values()),
                bronze_rows=_covered(bronze_rows, bronze_status.offsets),
                dead_letters=_covered(dead_rows, bronze_status.offsets),
                silver_covered_bronze_rows=_covered(bronze_rows, silver_offsets),
                silver_rows=silver_status.rows,
                rejects=_covered(reject_rows, silver_offsets),
                duplicates=recorded_counters(ensure_table(catalog, silver_spec)).get(topic, {}).get("duplicates", 0),
            )
        )
    for spec in (DEAD_LETTERS, SILVER_REJECTS):
        status.tables.append(_table_status(catalog, spec, None, None))
    return status
