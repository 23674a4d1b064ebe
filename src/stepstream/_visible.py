r"""User text made safe to print on a terminal: every control character shown as an escape.

Event payloads, results, error messages and names in a telemetry file are data, never
instructions to the terminal. :func:`visible` turns the characters a terminal would act on
(C0 and C1 controls with ESC among them, DEL, the line and paragraph separators and the
bidirectional overrides that reorder what follows) and lone surrogates (which no encoder
writes) into the escapes Python's ``repr`` uses: ``\x1b``, ``\n``, ``\u202e``,
``\ud800``. Everything else, backslashes included, is left as it is.
"""

from __future__ import annotations

import re

from stepstream._text import error_text

__all__ = ["unshowable", "visible"]

_ALWAYS = "\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_LINE = re.compile(f"[\x00-\x0a{_ALWAYS}]")
_UNSAFE_TEXT = re.compile(f"[\x00-\x08{_ALWAYS}]")  # keeps \t and \n
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")  # noqa: PLR2004


def unshowable(value: object, error: BaseException) -> str:
    """The placeholder for ``value`` when its ``str()`` or ``repr()`` raised ``error``."""
    return f"<{type(value).__name__} that cannot be shown: {type(error).__name__}>"


def _text_of(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseException):
        return error_text(value)  # the placeholder telemetry records for it, too
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - a user's __str__ must not break printing
        return unshowable(value, exc)


def visible(value: object, *, multiline: bool = False) -> str:
    r"""Return ``str(value)`` with every terminal control character shown as an escape.

    Args:
        value: User data; not a string, it is converted with ``str()`` (one that raises
            gives ``<Type that cannot be shown: Error>``).
        multiline: Keep newlines and tabs (text meant to print on several lines, such as
            a streamed text or an error message); ``\r\n`` counts as a newline. By
            default they are escaped too, so the result is one line.

    Returns:
        The text, unchanged when it holds nothing a terminal would act on.
    """
    text = _text_of(value)
    pattern = _UNSAFE_TEXT if multiline else _UNSAFE_LINE
    if pattern.search(text) is None:
        return text
    if multiline:
        text = text.replace("\r\n", "\n")
    return pattern.sub(_escape, text)
