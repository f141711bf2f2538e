"""Who may still watch: the re-check an open socket makes, and the
account events that ask for it.

A socket is allowed at connect, but an account can change under it: a
logout (in another tab of the same session), a deactivated user, a new
password (which ends every other session), a membership removed in the
admin. Each of these sends `push.access_changed(user_id)`; every socket of
that user then runs `access_verdict` and closes (signed out) or drops the
topics it may no longer watch. The hub runs the same check over all its
subscribers now and then, in case such a message was lost.

Memberships are the plant's: its audited writes (`plant/changes.py`) call
push themselves. Logouts and account edits are Django's own (the auth
views and the admin's user pages), so there is no service of ours to call
push from and they are heard here, as signals, connected in `LiveConfig.ready`.
"""

from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.utils.crypto import constant_time_compare

from . import push
from .topics import topic_allowed, visible_line_codes

# What a change to these fields of a user ends: a deactivated user, or a
# new password (Django ends the other sessions with it).
ACCOUNT_FIELDS = ("is_active", "password")


@dataclass(frozen=True)
class Verdict:
    signed_in: bool
    allowed_lines: frozenset[str] = frozenset()
    checked_topics: frozenset[str] = frozenset()
    allowed_topics: frozenset[str] = frozenset()


def access_verdict(*, user_id: int, session_key: str | None, topics) -> Verdict:
    """Is the socket's user still signed in on its session, and which of
    `topics` may they still watch?"""
    user = signed_in_user(user_id=user_id, session_key=session_key)
    if user is None:
        return Verdict(signed_in=False)
    checked = frozenset(topics)
    allowed = frozenset(name for name in checked if topic_allowed(user=user, topic=name))
    return Verdict(True, visible_line_codes(user=user), checked, allowed)


def signed_in_user(*, user_id: int, session_key: str | None):
    """The user, if the session still signs them in as Django itself would
    decide on the next request (same backend, active, password unchanged),
    else None. Without a session (a socket opened by a test or a token) only
    the account is checked."""
    from django.contrib.auth import get_user_model

    if session_key is None:
        user = get_user_model()._default_manager.filter(pk=user_id).first()
        return user if user is not None and user.is_active else None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    backend_path = session.get(BACKEND_SESSION_KEY)
    if str(session.get(SESSION_KEY)) != str(user_id):
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)  # None when inactive or gone
    if user is None or not hasattr(user, "get_session_auth_hash"):
        return user
    stored = session.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return user if any(constant_time_compare(stored, h) for h in hashes) else None


# Account events
# --------------


def _logged_out(sender, request, user, **kwargs):
    if user is None or user.pk is None:
        return
    ended = getattr(getattr(request, "session", None), "session_key", None)
    transaction.on_commit(lambda: push.access_changed(user.pk, ended_session=ended))


def _account_before_save(sender, instance, update_fields=None, **kwargs):
    # The stored values, to compare after the save; a login only writes
    # last_login, so it costs no query here.
    instance._live_account_before = None
    if instance.pk is None or (
        update_fields is not None and not set(update_fields) & set(ACCOUNT_FIELDS)
    ):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values(*ACCOUNT_FIELDS).first()
    instance._live_account_before = stored


def _account_saved(sender, instance, created, **kwargs):
    before = getattr(instance, "_live_account_before", None)
    if created or before is None:
        return
    if any(before[name] != getattr(instance, name) for name in ACCOUNT_FIELDS):
        user_id = instance.pk
        transaction.on_commit(lambda: push.access_changed(user_id))


def _account_deleted(sender, instance, **kwargs):
    user_id = instance.pk
    transaction.on_commit(lambda: push.access_changed(user_id))


def connect_account_events() -> None:
    user_model = settings.AUTH_USER_MODEL
    uid = "live.access"
    user_logged_out.connect(_logged_out, dispatch_uid=uid)
    pre_save.connect(_account_before_save, sender=user_model, dispatch_uid=uid)
    post_save.connect(_account_saved, sender=user_model, dispatch_uid=uid)
    post_delete.connect(_account_deleted, sender=user_model, dispatch_uid=uid)
