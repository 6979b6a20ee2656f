"""The `leaderboard:all` snapshot: the full global standings, stored as the rendered JSON
body the API answers with, so serving it costs one GET and no rendering.

`render` is the one place that body is made; the selectors decide when it is rebuilt
(leaderboard.selectors.leaderboard_standings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rest_framework.renderers import JSONRenderer

from cyberlab import redis_client
from leaderboard import keys
from leaderboard.serializers import StandingSerializer

if TYPE_CHECKING:
    from leaderboard.selectors import Standing


def render(standings: Sequence[Standing]) -> bytes:
    """Every standing as the body of one page holding all of them, as DRF renders it."""
    body = {
        "count": len(standings),
        "next": None,
        "previous": None,
        "results": StandingSerializer(standings, many=True).data,
    }
    return JSONRenderer().render(body)


@dataclass(frozen=True)
class Snapshot:
    body: bytes | None
    stale: bool
    ttl_ms: int  # -1 when missing or without expiry


def read() -> Snapshot:
    """The stored body, whether a change marked it stale, and its time left."""
    with redis_client.connection() as client:
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.snapshot_key())
        pipe.exists(keys.stale_key())
        pipe.pttl(keys.snapshot_key())
        body, stale, ttl_ms = pipe.execute()
    return Snapshot(body=body, stale=bool(stale), ttl_ms=max(-1, int(ttl_ms)))


def write(*, body: bytes, ttl: int) -> None:
    with redis_client.connection() as client:
        client.set(keys.snapshot_key(), body, ex=max(1, ttl))


def clear_stale() -> None:
    with redis_client.connection() as client:
        client.delete(keys.stale_key())
