import uuid

from django.contrib.auth.models import AbstractUser
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models
from django.utils import timezone


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


class SessionEndReason(models.TextChoices):
    LOGOUT = "logout", "Signed out"
    REVOKED = "revoked", "Revoked by the user"
    OTHERS_REVOKED = "others_revoked", "Revoked with all other sessions"
    PASSWORD_CHANGED = "password_changed", "Password changed"
    STAFF = "staff", "Revoked by staff"


class UserSession(models.Model):
    """The durable record of one sign-in, shown to its user and checked on every request.

    `id` is what URLs carry; the session key itself is never stored here, only its
    SHA-256, which the session guard looks up. A row whose `ended_at` is set is revoked
    for good, whatever copy of the session a cache still holds.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="user_sessions")
    key_hash = models.CharField(max_length=64, unique=True)
    user_agent = models.CharField(max_length=512, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=32, choices=SessionEndReason.choices, blank=True)

    class Meta:
        ordering = ("-last_seen_at",)
        indexes = [
            models.Index(
                fields=("user", "-last_seen_at"),
                condition=models.Q(ended_at__isnull=True),
                name="usersession_live_by_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} from {self.ip or 'unknown address'}"

    @property
    def is_active(self) -> bool:
        return self.ended_at is None


class SessionData(AbstractBaseSession):
    """Django's session table, with the sign-in each session belongs to.

    The link lets a revoke find and delete a user's sessions in Postgres even while
    Redis (which holds the cached copies) is down.
    """

    user_session = models.ForeignKey(
        UserSession, null=True, blank=True, on_delete=models.CASCADE, related_name="session_data"
    )

    @classmethod
    def get_session_store_class(cls):
        from cyberlab.accounts.session_store import SessionStore

        return SessionStore
