from django.apps import AppConfig


class LeaderboardConfig(AppConfig):
    name = "leaderboard"

    def ready(self) -> None:
        from cyberlab import nearcache
        from leaderboard import keys, receivers  # noqa: F401 -- receivers connects the signal receivers

        nearcache.track_prefix(*keys.NEAR_CACHE_PREFIXES)
