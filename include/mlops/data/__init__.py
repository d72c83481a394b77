"""Landed batches into the lake: ingest, the blocking Great Expectations gate, exactly-once days, S3 landing events."""
