"""Text that telemetry can always encode: what user code hands us, made safe.

Python strings may hold lone surrogates (``os.fsdecode`` of a non-UTF-8 file name),
which no UTF-8 encoder accepts, and ``str()`` or ``repr()`` of an object may raise.
These helpers never raise and always return encodable text; each costs one
``isascii()`` check when there is nothing to do, and they run where text enters the
telemetry seam (names once per run or step) or on the failure path only.
"""

from __future__ import annotations

__all__ = ["error_text", "safe_repr", "safe_text", "type_name"]


def safe_text(text: str) -> str:
    r"""Return ``text`` with lone surrogates escaped (as ``\udce9``); ``text`` if it has none."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def type_name(value: object) -> str:
    """The class name of ``value`` (or of the class ``value``), made safe."""
    cls = value if isinstance(value, type) else type(value)
    return safe_text(cls.__name__)


def error_text(error: BaseException) -> str:
    """``str(error)``, made safe; a placeholder naming the failure when ``__str__`` raises."""
    try:
        text = str(error)
    except Exception as exc:  # noqa: BLE001 - an unprintable error is still reported
        return f"<unprintable {type_name(error)}: str() raised {_describe(exc)}>"
    return safe_text(text)


def safe_repr(value: object, limit: int | None = None) -> str:
    """``repr(value)`` (cut to ``limit`` characters), made safe; never raises."""
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - the repr is for a message: never fail it
        return f"<{type_name(value)} object; repr() raised {type_name(exc)}>"
    text = safe_text(text)
    return text if limit is None else text[:limit]


def _describe(error: BaseException) -> str:
    """``Type: message`` of an error raised while describing another one."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - two unprintable errors in a row: the type will do
        return type_name(error)
    return f"{type_name(error)}: {safe_text(message)}" if message else type_name(error)
