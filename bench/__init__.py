"""Benchmarks: figures, not tests. ``python -m bench.run`` (``make bench``) writes ``bench/results/*.json``,
charts next to them and ``bench/RESULTS.md``. Every comparison is measured side by side in one run."""
