"""The local collector: an AgentOps v2 compatible server on SQLite or PostgreSQL.

Run it with ``agentops-async serve`` or embed it::

    from agentops_async.collector import Collector

    async with Collector(database="agentops.db", port=0) as collector:
        api_key = await collector.create_project("my-project")
        ...  # point clients at collector.url
"""

from __future__ import annotations

from ._context import CollectorSettings
from ._prices import DEFAULT_PRICES, ModelPrice, PriceTable
from ._reads import SessionView
from ._server import Collector
from ._storage import PruneResult, Storage, open_storage, prune

__all__ = [
    "DEFAULT_PRICES",
    "Collector",
    "CollectorSettings",
    "ModelPrice",
    "PriceTable",
    "PruneResult",
    "SessionView",
    "Storage",
    "open_storage",
    "prune",
]
