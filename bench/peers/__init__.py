"""The servers the fan-out is measured against, each in a process of its own (``bench/run.py``, section 4)."""
