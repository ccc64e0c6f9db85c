"""One module per scenario; each exposes ``ROUTES[variant]`` (the broken or fixed handlers) and ``COMMON``."""
