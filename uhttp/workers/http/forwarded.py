"""X-Forwarded-For as a trusted proxy gives it: IP addresses only.

uhttp-server takes the header's entries from a trusted proxy as they come
(brackets and ports dropped), so `X-Forwarded-For: <script>` passed on by
a proxy became `request.remote_address`, the access log's client and
the key users rate-limit by. An entry that is no IP address is dropped
here; with none left, the socket's peer is the client.
"""

import ipaddress as _ipaddress


def is_ip(text):
    """An IPv4 or IPv6 address; not one with a zone ('fe80::1%eth0': the
    ipaddress module takes any text after the '%', and a zone means
    nothing for a client's address)."""
    if '%' in text:
        return False
    try:
        _ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class ForwardedFor:
    """The X-Forwarded-For chain with its entries that are IP addresses."""

    @property
    def remote_addresses(self):
        chain = super().remote_addresses
        valid = [address for address in chain if is_ip(address)]
        if len(valid) == len(chain):
            return chain
        return valid or [self._socket_ip]
