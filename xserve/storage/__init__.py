"""Durable storage under the data directory (tables, the ANN index, the event log)."""
