"""Text mode of a call (``text``, ``encoding``, ``errors``, ``universal_newlines``).

What :class:`subprocess.Popen` decides from the same four arguments, and the
check of ``input`` against the mode, both made before anything runs.
"""

from __future__ import annotations

import codecs
import locale

from nscg.errors import SpecError

__all__ = ["checked_input", "text_codec"]


def text_codec(
    text: bool | None,
    encoding: str | None,
    errors: str | None,
    universal_newlines: bool | None,
) -> tuple[str, str] | None:
    """(encoding, errors) in text mode, None in binary mode; as :class:`subprocess.Popen`.

    Text mode is on when any of the four asks for it; the encoding defaults to
    the locale's, the error handler to ``"strict"``. Both are looked up now,
    before anything runs.

    Raises:
        SpecError: an unknown encoding or error handler, or text and
            universal_newlines contradicting each other.
    """
    if (
        text is not None
        and universal_newlines is not None
        and bool(text) != bool(universal_newlines)
    ):
        raise SpecError("text and universal_newlines contradict each other; give only text")
    if not (text or universal_newlines or encoding or errors):
        return None
    enc = encoding or locale.getpreferredencoding(False)
    try:
        codecs.lookup(enc)
    except LookupError:
        raise SpecError(f"unknown encoding {enc!r}") from None
    err = errors or "strict"
    try:
        codecs.lookup_error(err)
    except LookupError:
        raise SpecError(f"unknown error handler {err!r} (errors=)") from None
    return enc, err


def checked_input(input: object, codec: tuple[str, str] | None) -> bytes | memoryview | None:
    """``input`` as bytes to write: ``str`` in text mode, bytes-like in binary mode.

    Raises:
        SpecError: the wrong kind for the mode, or a ``str`` the codec cannot encode.
    """
    if input is None:
        return None
    if codec is not None:
        if not isinstance(input, str):
            raise SpecError(
                f"input must be a str in text mode (text, encoding, errors or "
                f"universal_newlines given), got {type(input).__name__}"
            )
        try:
            return input.encode(*codec)
        except UnicodeEncodeError as e:
            raise SpecError(f"input cannot be encoded with {codec[0]!r}: {e}") from None
    if isinstance(input, str):
        raise SpecError("input is a str: give bytes, or text=True (or an encoding) for text mode")
    if not isinstance(input, (bytes, bytearray, memoryview)):
        raise SpecError(
            f"input must be bytes-like (or str in text mode), got {type(input).__name__}"
        )
    return input if isinstance(input, bytes) else memoryview(input).cast("B")
