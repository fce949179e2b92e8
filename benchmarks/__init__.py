"""asv benchmark suites of fastxent (see README.md in this directory)."""
