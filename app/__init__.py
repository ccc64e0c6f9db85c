"""asyncio-pitfalls: asyncio failures of real services, each broken handler beside its fixed twin."""
