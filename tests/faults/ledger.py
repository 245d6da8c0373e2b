"""The delivery ledger: what the SDK recorded vs what the collector stored, by event id."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import agentops_async as ao

LEDGER_ROWS: list[str] = []


@dataclasses.dataclass
class LedgerResult:
    recorded: int
    stored: int
    duplicated: int
    missing: int
    dropped_reported: int


class Ledger:
    """Remembers every event id recorded per session."""

    def __init__(self) -> None:
        self.recorded: dict[str, list[str]] = collections.defaultdict(list)

    async def record(self, session: ao.AsyncSession, event: ao.Event) -> None:
        # The exporter makes ids when it sends; ensure_id() makes it now, so it can be ledgered.
        self.recorded[session.session_id].append(event.ensure_id())
        await session.record(event)

    async def check(
        self, collector: Any, client: ao.AsyncClient, scenario: str, injected: Any = ""
    ) -> LedgerResult:
        stored_total = duplicated = missing = 0
        for session_id, ids in self.recorded.items():
            stored = [e["id"] for e in await collector.get_events(session_id)]
            counts = collections.Counter(stored)
            stored_total += len(stored)
            duplicated += sum(n - 1 for n in counts.values())
            missing += len(set(ids) - set(counts))
        result = LedgerResult(
            recorded=sum(len(ids) for ids in self.recorded.values()),
            stored=stored_total,
            duplicated=duplicated,
            missing=missing,
            dropped_reported=client.stats.dropped,
        )
        LEDGER_ROWS.append(
            f"| {scenario} | {result.recorded} | {result.stored} | {result.duplicated} | "
            f"{result.dropped_reported} | {result.missing} | {dict(injected) or ''} |"
        )
        return result
