"""The Dispatcher's ssl_context, checked when the dispatcher is made.

A context that cannot serve (no certificate loaded, or a client-side
one) would otherwise make a server that says it listens on https:// and
fails every handshake, with nothing in its log. A handshake between the
context and a client in memory tells, before a port is bound.
"""

import ssl as _ssl


def check_ssl_context(context):
    """`context` itself; a TypeError for what is no SSLContext, a
    ValueError for one no client could get a handshake from."""
    if context is None:
        return None
    if not hasattr(context, 'wrap_socket'):
        raise TypeError(f"Dispatcher ssl_context must be an ssl.SSLContext, "
                        f"not {context!r}")
    if not isinstance(context, _ssl.SSLContext):
        return context  # a stand-in of the caller's: taken as it is
    if context.protocol == _ssl.PROTOCOL_TLS_CLIENT:
        raise ValueError(
            "Dispatcher ssl_context is a client-side context (what "
            "ssl.create_default_context() makes by default); a server's is "
            "made with ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) "
            "or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)")
    if context.sni_callback is not None:
        return context  # its callback picks the certificate: not ours to call
    reason = _handshake_fails(context)
    if reason:
        raise ValueError(
            f"Dispatcher ssl_context cannot serve HTTPS: a test handshake "
            f"fails ({reason}); load the server's certificate and key with "
            f"context.load_cert_chain(certfile, keyfile)")
    return context


def _handshake_fails(context):
    """Why the server side of a handshake with a lenient client fails,
    or None once it has answered the client's hello."""
    client = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = _ssl.CERT_NONE
    try:
        client.minimum_version = _ssl.TLSVersion.MINIMUM_SUPPORTED
        client.set_ciphers('ALL:@SECLEVEL=0')
    except (ValueError, _ssl.SSLError):  # pragma: no cover - OpenSSL builds
        pass
    to_server, to_client = _ssl.MemoryBIO(), _ssl.MemoryBIO()
    speaker = client.wrap_bio(to_client, to_server)
    try:
        server = context.wrap_bio(to_server, to_client, server_side=True)
    except (_ssl.SSLError, ValueError) as err:
        return str(err)
    try:
        speaker.do_handshake()
    except _ssl.SSLWantReadError:
        pass
    except _ssl.SSLError:  # pragma: no cover - the client's side: not told
        return None
    try:
        server.do_handshake()
    except _ssl.SSLWantReadError:
        return None  # it answered and waits for the client's next step
    except _ssl.SSLError as err:
        return str(err)
    return None
