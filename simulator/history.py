"""History files: a generated range stored as one Parquet or CSV file per topic, and read back in time order.

``write_history`` stores what ``simulator.market.generate`` yields; ``read_history`` reads such files (or
any historical data in the same columns) back in ``event_timestamp`` order for ``ticklake replay --from``,
and ``simulator.pacing.paced`` then reproduces their original timing.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.avro import CURRENT_CONTRACT, avro_to_arrow
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TOPICS, RAW_TRADES
from simulator.market import GeneratorConfig, Record, generate
from simulator.pacing import DEFAULT_MAX_GAP_S, offered_schedule
from simulator.replay import WINDOW_ROWS, Window, table_windows

# The column whose order a history file is replayed in, per topic (all three contracts carry it).
TIMESTAMP_COLUMN = "event_timestamp"

HistoryFormat = Literal["parquet", "csv"]
_NESTED = ("bids", "asks")  # list columns, stored as JSON text in CSV


def topic_schema(topic: str) -> pa.Schema:
    """The Arrow shape of a topic's records (timestamps as UTC microseconds)."""
    return avro_to_arrow(CURRENT_CONTRACT[topic].schema_json)


def write_history(
    config: GeneratorConfig, path: str | Path, format: HistoryFormat = "parquet", chunk_rows: int = 100_000
) -> dict[str, Path]:
    """Generate ``config`` into ``path/<topic>.<format>`` (one file per topic, publish order kept).

    Returns the files written. Memory stays bounded: rows are written ``chunk_rows`` at a time.
    """
    if format not in ("parquet", "csv"):
        raise ValueError(f"history format must be 'parquet' or 'csv', got {format!r}")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    files = {topic: directory / f"{topic}.{format}" for topic in RAW_TOPICS}
    writers: dict[str, pq.ParquetWriter | pacsv.CSVWriter] = {}
    buffers: dict[str, list[Record]] = {topic: [] for topic in RAW_TOPICS}

    def flush(topic: str) -> None:
        table = _to_file_table(topic, buffers[topic], format)
        if topic not in writers:
            writers[topic] = (
                pq.ParquetWriter(files[topic], table.schema, compression="zstd")
                if format == "parquet"
                else pacsv.CSVWriter(files[topic], table.schema)
            )
        writers[topic].write_table(table)
        buffers[topic].clear()

    try:
        for topic, record in generate(config):
            buffers[topic].append(record)
            if len(buffers[topic]) >= chunk_rows:
                flush(topic)
        for topic in RAW_TOPICS:
            if buffers[topic] or topic not in writers:
                flush(topic)  # an empty topic still gets a file with its header
    finally:
        for writer in writers.values():
            writer.close()
    return files


def _to_file_table(topic: str, rows: list[Record], format: HistoryFormat) -> pa.Table:
    schema = topic_schema(topic)
    table = pa.Table.from_pylist(rows, schema=schema)
    if format == "csv":
        for name in _NESTED:
            if name in table.column_names:
                text = pa.array([json.dumps(v) for v in table[name].to_pylist()], pa.string())
                table = table.set_column(table.schema.get_field_index(name), name, text)
    return table


def topic_of(path: Path, columns: list[str]) -> str:
    """The topic a history file holds: from its name (``raw.trades*.csv``), else from its columns."""
    for topic in RAW_TOPICS:
        if path.name.startswith(topic):
            return topic
    if "trade_id" in columns or "side" in columns:
        return RAW_TRADES
    if "bids" in columns:
        return RAW_ORDERBOOK
    if "open" in columns and "interval_start" in columns:
        return RAW_MARKETDATA
    raise ValueError(f"cannot tell which topic {path} holds (name it raw.<topic>.parquet/csv); columns: {columns}")


def read_history_table(path: Path) -> tuple[str, pa.Table]:
    """One history file as (topic, table in the contract's columns, timestamps as int64 µs, in timestamp order)."""
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        topic = topic_of(path, table.column_names)
    elif path.suffix == ".csv":
        header = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names if path.stat().st_size else []
        topic = topic_of(path, header)
        schema = topic_schema(topic)
        types = {f.name: (pa.string() if f.name in _NESTED else f.type) for f in schema if f.name in header}
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    else:
        raise ValueError(f"history files are .parquet or .csv, got {path}")
    schema = topic_schema(topic)
    missing = [f.name for f in schema if f.name not in table.column_names and not f.nullable]
    required = [n for n in ("symbol", TIMESTAMP_COLUMN) if n not in table.column_names]
    if required or missing:
        raise ValueError(f"{path} ({topic}) lacks columns {required + missing}")
    return topic, _conform(table, schema)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns of the topic's contract, in its order: timestamps as int64 µs, absent optional columns null."""
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table[f.name]
        if f.name in _NESTED and pa.types.is_string(column.type):
            column = pa.array([None if v is None else json.loads(v) for v in column.to_pylist()], f.type)
        else:
            column = column.cast(f.type)
        columns.append(column)
    table = pa.table(columns, schema=schema)
    for i, f in enumerate(schema):
        if pa.types.is_timestamp(f.type):
            table = table.set_column(i, f.name, table[f.name].cast(pa.int64()))
    order = table[TIMESTAMP_COLUMN]
    if len(order) > 1 and not _is_sorted(order):
        table = table.take(pc.sort_indices(table, sort_keys=[(TIMESTAMP_COLUMN, "ascending")]))  # stable
    return table


def _is_sorted(column: pa.ChunkedArray) -> bool:
    values = column.to_numpy()
    return bool(np.all(values[1:] >= values[:-1]))


def history_files(path: Path) -> list[Path]:
    """The history files at ``path``: the file itself, or every .parquet/.csv in the directory."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".csv"))
        if not files:
            raise FileNotFoundError(f"no .parquet or .csv history files in {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"history file {path} does not exist")
    return [path]


def _records(topic: str, table: pa.Table, batch_rows: int = 10_000) -> Iterator[tuple[int, str, Record]]:
    for batch in table.to_batches(max_chunksize=batch_rows):
        for record in batch.to_pylist():
            yield record[TIMESTAMP_COLUMN], topic, record


def read_history(path: str | Path) -> Iterator[tuple[str, Record]]:
    """(topic, record) from a history file or a directory of them, in ``event_timestamp`` order.

    Each file is one topic (from its name, else its columns) in the contract's columns; rows with equal
    timestamps keep their file order, so one symbol's events keep their published order.
    """
    tables = [read_history_table(p) for p in history_files(Path(path))]
    streams = [_records(topic, table) for topic, table in tables]
    for _, topic, record in heapq.merge(*streams, key=lambda item: item[0]):
        yield topic, record


def history_windows(
    path: str | Path, speed: float = 0.0, max_gap_s: float | None = DEFAULT_MAX_GAP_S, window_rows: int = WINDOW_ROWS
) -> tuple[int, Iterator[Window]]:
    """History files as replay windows, columns all the way (no per-record Python): (messages, windows).

    The same order as ``read_history`` (event time, ties in file order); with ``speed`` > 0 each row is
    due at its ``simulator.pacing`` release time.
    """
    tables: dict[str, pa.Table] = {}
    for file in history_files(Path(path)):
        topic, table = read_history_table(file)
        tables[topic] = pa.concat_tables([tables[topic], table]) if topic in tables else table
    for topic, table in tables.items():
        if not _is_sorted(table[TIMESTAMP_COLUMN]):  # two files of one topic: merge them by time
            tables[topic] = table.take(pc.sort_indices(table, sort_keys=[(TIMESTAMP_COLUMN, "ascending")]))
    topics = list(tables)
    stamps = [tables[t][TIMESTAMP_COLUMN].to_numpy() for t in topics]
    codes = np.concatenate([np.full(len(s), i, dtype=np.int8) for i, s in enumerate(stamps)]) if stamps else np.zeros(0, np.int8)
    merged = np.argsort(np.concatenate(stamps), kind="stable") if stamps else np.zeros(0, np.int64)
    order = codes[merged]
    due: dict[str, np.ndarray | None] = {t: None for t in topics}
    if speed > 0 and len(order):
        times = offered_schedule(np.concatenate(stamps)[merged], speed, max_gap_s)
        due = {t: times[order == i] for i, t in enumerate(topics)}
    return len(order), table_windows(tables, due, order, topics, window_rows)
