from django.apps import AppConfig


class LabsConfig(AppConfig):
    name = "labs"
    verbose_name = "Courses and labs"

    def ready(self) -> None:
        from cyberlab.accounts.selectors import profile_contributor
        from labs import receivers

        receivers.connect()
        profile_contributor(_points_contributor)


def _points_contributor(user) -> dict:
    """Points live in labs: the profile `auth/me/` serves gets them from here."""
    from labs.selectors import user_points

    return {"points": user_points(user=user)}
