from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A learner or a staff member."""

    display_name = models.CharField(
        max_length=64, blank=True, help_text="Shown on the leaderboard; the username when empty."
    )
    hidden_from_leaderboard = models.BooleanField(
        default=False, help_text="Leave this learner out of every leaderboard."
    )

    @property
    def public_name(self) -> str:
        return self.display_name or self.username
