"""Feast: feature definitions, the lake-backed offline store, the online stores, materialization and training sets."""
