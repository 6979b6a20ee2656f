"""Sign-ins and sign-outs keep their `UserSession` records (connected in `apps.ready`)."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from cyberlab.accounts import credentials, services
from cyberlab.accounts.models import User
from cyberlab.accounts.selectors import user_profile_invalidate
from cyberlab.events import services as events


@receiver(post_save, sender=User, dispatch_uid="accounts.user_saved")
@receiver(post_delete, sender=User, dispatch_uid="accounts.user_deleted")
def user_changed(sender, instance: User, **kwargs) -> None:
    # Deactivated, deleted or a new password: this process forgets what signed the user
    # in (Postgres tells the others), and their open event streams are checked again.
    credentials.cache.forget(user_id=instance.pk)
    events.streams_recheck(user_id=instance.pk)
    # The cached profile shows the user's own fields too (a rename in the admin).
    transaction.on_commit(lambda: user_profile_invalidate(user_id=instance.pk))


@receiver(post_delete, sender=Token, dispatch_uid="accounts.token_deleted")
def token_deleted(sender, instance: Token, **kwargs) -> None:
    credentials.cache.forget(user_id=instance.user_id)


@receiver(user_logged_in, dispatch_uid="accounts.user_session_record")
def record_sign_in(sender, request, user, **kwargs) -> None:
    if request is not None and hasattr(request, "session"):
        services.user_session_record(request=request, user=user)


@receiver(user_logged_out, dispatch_uid="accounts.user_session_end")
def end_sign_in(sender, request, user, **kwargs) -> None:
    if request is not None and getattr(request, "session", None) is not None and request.session.session_key:
        services.user_session_end_by_key(session_key=request.session.session_key)
