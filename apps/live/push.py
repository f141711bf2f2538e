"""The one way domain code reaches browsers: send rendered HTML to a topic."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .topics import group_name


def push_fragment(*, topic: str, html: str) -> None:
    """Send `html` (htmx out-of-band fragments) to every socket on `topic`."""
    async_to_sync(get_channel_layer().group_send)(
        group_name(topic), {"type": "live.fragment", "topic": topic, "html": html}
    )
