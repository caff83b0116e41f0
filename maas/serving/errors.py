"""The one exception the serving layer raises for a request it refuses."""
from __future__ import annotations


class ServingError(Exception):
    """A request refused with an HTTP status and a message for the client.

    >>> e = ServingError(404, "model 'x' is not served")
    >>> e.status, str(e)
    (404, "model 'x' is not served")
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message

    def __str__(self):
        return self.message
