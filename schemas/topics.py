"""Kafka topic names: the raw inputs, and the dead-letter topic each one owns."""

from __future__ import annotations

RAW_TRADES = "raw.trades"
RAW_ORDERBOOK = "raw.orderbook"
RAW_MARKETDATA = "raw.marketdata"

RAW_TOPICS: tuple[str, ...] = (RAW_TRADES, RAW_ORDERBOOK, RAW_MARKETDATA)


def dead_letter_topic(source_topic: str) -> str:
    """``raw.trades`` -> ``dlq.raw.trades``: bad messages keep their source name visible."""
    return f"dlq.{source_topic}"


def default_topics() -> list[str]:
    """The topics TickLake creates: the raw topics and the dead-letter topic of each."""
    return [*RAW_TOPICS, *(dead_letter_topic(t) for t in RAW_TOPICS)]
