"""A rebuild's keys, written aside and swapped in by one script (leaderboard.scripts.SWAP),
so readers see the old boards or the new ones, never a board half written."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import redis

from cyberlab import redis_client
from leaderboard import keys, scripts
from leaderboard.scores import encode

# Staged keys that are not boards: the swap does not list them in `leaderboard:boards`.
_NON_BOARD_KEYS = {keys.names_key(), keys.excluded_key(), keys.applied_key(), keys.boards_key()}
_CHUNK = 1000


class Staging:
    def __init__(self, *, stage_ttl: int) -> None:
        self.token = secrets.token_hex(8)
        # Staged keys expire on their own if the rebuild dies before the swap.
        self.stage_ttl = stage_ttl
        self.expire_at: dict[str, int] = {}

    def staged(self, key: str) -> str:
        return keys.rebuild_key(token=self.token, key=key)

    def write_board(self, key: str, entries: Iterator[tuple[int, int, int]], expire_at_ms: int = 0) -> None:
        """entries: (user id, points, seconds)."""
        self.expire_at[key] = expire_at_ms
        self._write_chunks(
            key,
            (
                (keys.member(user_id), encode(points=points, seconds=seconds))
                for user_id, points, seconds in entries
            ),
            lambda pipe, staged, chunk: pipe.zadd(staged, dict(chunk)),
        )

    def write_hash(self, key: str, mapping: Iterator[tuple[str, str]]) -> None:
        self.expire_at[key] = 0
        self._write_chunks(key, mapping, lambda pipe, staged, chunk: pipe.hset(staged, mapping=dict(chunk)))

    def write_set(self, key: str, members: Iterator[str]) -> None:
        self.expire_at[key] = 0
        self._write_chunks(
            key,
            ((m, m) for m in members),
            lambda pipe, staged, chunk: pipe.sadd(staged, *(m for m, _ in chunk)),
        )

    def write_applied(self, solve_ids: Iterator[int]) -> None:
        self.expire_at[keys.applied_key()] = 0
        self._write_chunks(
            keys.applied_key(),
            ((str(i), i) for i in solve_ids),
            lambda pipe, staged, chunk: pipe.zadd(staged, dict(chunk)),
        )

    def _write_chunks(
        self, key: str, items: Iterator[tuple], write: Callable[[redis.client.Pipeline, str, list], object]
    ) -> None:
        staged = self.staged(key)
        with redis_client.connection() as client:
            client.unlink(staged)
            pipe = client.pipeline(transaction=False)
            chunk: list = []
            for item in items:
                chunk.append(item)
                if len(chunk) >= _CHUNK:
                    write(pipe, staged, chunk)
                    chunk = []
            if chunk:
                write(pipe, staged, chunk)
            pipe.expire(staged, self.stage_ttl)
            pipe.execute()

    def swap(self, *, cursor: int) -> None:
        """Replaces every board and bookkeeping key with the staged ones, atomically."""
        board_names = [key for key in self.expire_at if key not in _NON_BOARD_KEYS]
        self.write_set(keys.boards_key(), iter(board_names))
        script_keys = [keys.boards_key(), keys.cursor_key(), keys.stale_key()]
        args: list = [cursor]
        for key, expire_at in self.expire_at.items():
            script_keys.extend([self.staged(key), key])
            args.append(expire_at)
        with redis_client.connection() as client:
            scripts.SWAP(keys=script_keys, args=args, client=client)

    def discard(self) -> None:
        if not self.expire_at:
            return
        with redis_client.connection() as client:
            client.unlink(*(self.staged(key) for key in self.expire_at))
