from django.apps import AppConfig


class LabsConfig(AppConfig):
    name = "labs"
    verbose_name = "Courses and labs"

    def ready(self) -> None:
        from cyberlab import redis_client
        from cyberlab.accounts.selectors import profile_contributor
        from labs import cache, receivers

        receivers.connect()
        profile_contributor(_points_contributor)
        redis_client.on_recover(cache.catalogue_repair_on_recovery)


def _points_contributor(user) -> dict:
    """Points live in labs: the profile `auth/me/` serves gets them from here."""
    from labs.selectors import user_points

    return {"points": user_points(user=user)}
