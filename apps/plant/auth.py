"""How a device proves who it is: a bearer token in the Authorization header.

The HTTP device API and the gateway WebSocket both read the header with
`bearer_token` and look the token up with `selectors.gateway_for_token`,
so the two doors of the server accept exactly the same credentials.
"""


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value.

    None when there is no header at all (the caller may try another way in,
    e.g. a session), "" when there is one but it carries no bearer token.
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
