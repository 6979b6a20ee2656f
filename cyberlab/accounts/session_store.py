"""The session engine: Django's cached_db, keeping each sign-in's record in step.

Sessions are cached in Redis and written through to Postgres, as with cached_db. The
Postgres row also names the `UserSession` it belongs to, so revoking finds a user's
sessions without Redis; when the key changes (login, password change) the record
follows it, and a flushed session ends its record.
"""

from __future__ import annotations

from django.contrib.sessions.backends import cached_db

# Where the session data names its `UserSession`.
USER_SESSION_ID = "_user_session_id"


class SessionStore(cached_db.SessionStore):
    @classmethod
    def get_model_class(cls):
        from cyberlab.accounts.models import SessionData

        return SessionData

    def create_model_instance(self, data):
        instance = super().create_model_instance(data)
        instance.user_session_id = data.get(USER_SESSION_ID)
        return instance

    async def acreate_model_instance(self, data):
        instance = await super().acreate_model_instance(data)
        instance.user_session_id = data.get(USER_SESSION_ID)
        return instance

    def cycle_key(self):
        from cyberlab.accounts.services import user_session_rekey

        old_key = self.session_key
        super().cycle_key()
        if old_key:
            user_session_rekey(old_key=old_key, new_key=self.session_key)

    def flush(self):
        from cyberlab.accounts.services import user_session_end_by_key

        if self.session_key:
            user_session_end_by_key(session_key=self.session_key)
        super().flush()
