from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "apps.live"
    label = "live"
    verbose_name = "Live updates"

    def ready(self):
        # Logouts and account edits happen in Django's own views and admin:
        # heard here so the user's open sockets re-check at once (access.py).
        from .access import connect_account_events

        connect_account_events()
