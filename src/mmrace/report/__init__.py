"""Rendering of results and traces: text columns, JSON, Perfetto/Chrome
trace-event JSON (:mod:`~mmrace.report.perfetto`), a self-contained HTML
page (:mod:`~mmrace.report.html`)."""
