"""Parsing clients' bodies: any unexpected failure of a parser is the client's 4xx, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import ValidationError

import crypto
from fl_server.errors import ServerError

__all__ = ["client_input", "validation_detail"]

logger = logging.getLogger("fl_server")


@contextmanager
def client_input(what: str, error: Callable[[str], ServerError]) -> Iterator[None]:
    """Turn any unexpected exception of the parsing inside into ``error`` (a 4xx).

    The parsers say what is wrong with their own errors (``ServerError``, or a
    ``crypto.CryptoError`` the caller translates); anything else they raise on odd input
    (a ``RecursionError`` on deeply nested JSON, a ``ValueError`` on a 5,000-digit
    number) is still the body's fault. ``what`` names the body in the answer, which
    never echoes it.
    """
    try:
        yield
    except (ServerError, crypto.CryptoError):
        raise
    except RecursionError:
        raise error(f"{what} is nested too deeply") from None
    except Exception as exc:
        # The type says enough to find the parser's gap; the message may quote the input.
        logger.warning("%s could not be parsed: %s", what, type(exc).__name__)
        raise error(f"{what} could not be parsed ({type(exc).__name__})") from None


def validation_detail(exc: ValidationError) -> str:
    """Each field pydantic refused and why, ``; ``-joined; never the input."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in exc.errors(include_input=False)
    )
