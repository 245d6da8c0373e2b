"""The documented limits that the SDK and the collector enforce alike.

One module so that the two sides can never disagree: whatever the SDK sends within these limits the
collector accepts, and whatever the collector refuses the SDK never produces (it truncates, splits
or refuses at the call site first). docs/reliability.md lists them for users.
"""

from __future__ import annotations

__all__ = [
    "MAX_EVENTS_PER_REQUEST",
    "MAX_ID_LENGTH",
    "MAX_INT",
    "MAX_NESTING_DEPTH",
    "MAX_TAG_LENGTH",
    "MIN_INT",
]

# Containers (objects and arrays) inside one event's JSON, counting the event object itself as 1.
# Deeper values are cut by the SDK (replaced by a short marker string) and refused with a 400 by
# the collector. Far below the recursion limits of Python, msgspec and PostgreSQL's jsonb.
MAX_NESTING_DEPTH = 64

# Characters of one session tag. PostgreSQL indexes tags with a btree, whose rows are limited to
# ~2.7 KB; 256 characters of up to 4 UTF-8 bytes each stays well inside that.
MAX_TAG_LENGTH = 256

# Events in one create_events request. The SDK's max_batch_size may not exceed it; the collector
# answers 413 above it.
MAX_EVENTS_PER_REQUEST = 10_000

# Characters of an event, agent or session-side id.
MAX_ID_LENGTH = 200

# Integers that are stored as numbers (token counts): signed 64-bit, as both databases store them.
MAX_INT = 2**63 - 1
MIN_INT = -(2**63)
