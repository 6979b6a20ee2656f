from django.apps import AppConfig


class LeaderboardConfig(AppConfig):
    name = "leaderboard"

    def ready(self) -> None:
        from cyberlab import nearcache
        from leaderboard import (
            receivers,  # noqa: F401 -- connects the signal receivers
            store,
        )

        nearcache.track_prefix(*store.NEAR_CACHE_PREFIXES)
