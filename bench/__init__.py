"""Benchmarks for streamui that compare side by side in one run (``python -m bench``)."""
