"""The alexsuite command line (installed as alexsuite.cli): parse, call the library, print."""
