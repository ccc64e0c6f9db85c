"""Command-line tools that drive a running asyncio-pitfalls service: load scenarios and their verdicts."""
