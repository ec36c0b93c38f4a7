"""Contracts shared by the stream workers and the Dagster control plane.

Avro schemas (``avro/*.avsc``), the Confluent wire framing, topic names, the environment
settings and the Iceberg table specs live here once; both sides import them, neither side
imports the other.
"""
