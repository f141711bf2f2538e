from http.cookies import SimpleCookie

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore


def session_cookie_for(user) -> str:
    """A Cookie header value logging `user` in, as a browser would send it
    (for WebSocket clients that are not a browser)."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    cookie = SimpleCookie()
    cookie[settings.SESSION_COOKIE_NAME] = session.session_key
    return cookie.output(header="", attrs=[]).strip()
