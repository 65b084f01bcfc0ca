"""mmrace: an executable model of Linux memory-management concurrency and a
systematic explorer that runs it."""

__version__ = "0.1.0"
