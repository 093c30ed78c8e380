"""The package version: one place, read by pyproject.toml, the index manifest and the report."""

__version__ = "0.1.0"
