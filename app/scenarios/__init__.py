"""One module per scenario, each with its broken and fixed handlers side by side and a ``setup(app, variant)``
that mounts the variant's handlers (and resources) on the variant's sub-application."""

from . import cancellation, disconnect, pubsub, shield

ALL = (disconnect, pubsub, shield, cancellation)

# What POST /api/reset (and each test) runs to empty the scenarios' tables.
RESET_SQL = "; ".join(scenario.RESET_SQL for scenario in ALL if scenario.RESET_SQL)
