"""The viewer's errors and the HTTP status each one is answered with. Every message is one line naming the
file, option or request and the fix; the page shows it as it is."""
from __future__ import annotations

from dermo.errors import DermoError


class ViewerError(DermoError):
    """A viewer option or request that cannot be served (HTTP 400 when it comes from a request)."""


class NotFound(ViewerError):
    """A request for something that is not there (HTTP 404)."""


class TooLarge(ViewerError):
    """An upload over the size limit (HTTP 413)."""


def status_of(error: DermoError) -> int:
    """HTTP status of a refused request: 404, 413, else 400 (bad input: not an image, truncated, too many
    pixels, a bad option)."""
    return 404 if isinstance(error, NotFound) else 413 if isinstance(error, TooLarge) else 400
