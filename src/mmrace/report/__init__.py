"""Rendering of results and traces: text columns and JSON."""
