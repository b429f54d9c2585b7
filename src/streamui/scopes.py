"""Scopes: the names a component watches and an application invalidates.

Grammar (the contract every other module relies on):

- A scope is ``segment(:segment)*``, at most 256 characters. A segment is one or more
  of ``A-Z a-z 0-9 _ -``.
- A *watched* scope (a pattern) may use ``*`` as a whole segment (exactly one segment)
  and ``>`` as the last segment (one or more remaining segments), as NATS does.
  Invalidated scopes are always concrete.
- Anything else raises `InvalidScopeError` (a `ValueError`) naming the bad character
  and its position. ``.`` is never a segment character, so a scope maps onto exactly
  as many subject tokens as it has segments and cannot widen itself into another
  subject.

Subjects are ``<prefix>.<segment>.<segment>…``; with prefix ``webx.scope`` they are the
Go package's subjects. Signal keys (`scope_key`) are JavaScript identifiers under the
``_stream`` namespace; `scope_from_key` is the exact inverse.

Key encoding. A scope whose segments are all ``[A-Za-z0-9]+`` (but not the words
``WILD`` or ``REST``), ``*`` or ``>``, and which does not start with a digit, reads as
in the Go package: segments joined by ``_``, ``*`` spelled ``WILD`` and ``>`` spelled
``REST`` (``invoice:42 -> invoice_42``, ``workspace:1:* -> workspace_1_WILD``). Every
other scope gets a key that starts with ``_`` (which no plain key does) followed by
the scope with each non-alphanumeric character escaped as ``_`` plus one code letter
(``:``→``__``, ``_``→``_u``, ``-``→``_h``, ``*``→``_w``, ``>``→``_r``). Both forms are
prefix-free codes, so distinct scopes never share a key.
"""

from __future__ import annotations

import re
from typing import Final

from streamui.errors import InvalidScopeError

__all__ = [
    "DATA_NAMESPACE",
    "DEFAULT_PREFIX",
    "MAX_SCOPE_LENGTH",
    "SIGNAL_NAMESPACE",
    "is_pattern",
    "scope",
    "scope_from_key",
    "scope_from_subject",
    "scope_key",
    "scope_matches",
    "scope_subject",
    "validate_prefix",
    "validate_scope",
]

SIGNAL_NAMESPACE: Final = "_stream"
"""Signals holding each watched scope's revision. The leading underscore keeps Datastar
from sending them to the server with every request."""

DATA_NAMESPACE: Final = "_streamData"
"""Signals holding the optional JSON payload of the latest invalidation of a scope."""

DEFAULT_PREFIX: Final = "streamui.scope"
MAX_SCOPE_LENGTH: Final = 256

_SEGMENT_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)
_SEGMENT = r"[A-Za-z0-9_-]+"
_CONCRETE_RE: Final = re.compile(rf"{_SEGMENT}(?::{_SEGMENT})*")
_PATTERN_RE: Final = re.compile(rf"(?:{_SEGMENT}|\*)(?::(?:{_SEGMENT}|\*))*(?::>)?|>")
_PLAIN_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9]+")
_PLAIN_KEY_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*")
_PREFIX_RE: Final = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")

_WILD: Final = "WILD"
_REST: Final = "REST"
_ESCAPES: Final = {":": "__", "_": "_u", "-": "_h", "*": "_w", ">": "_r"}
_UNESCAPES: Final = {code[1]: char for char, code in _ESCAPES.items()}


def validate_scope(value: object, *, allow_wildcards: bool = True) -> str:
    """Return *value* if it is a valid scope, else raise `InvalidScopeError`.

    With ``allow_wildcards=False`` the scope must be concrete (what `invalidate` takes).
    """
    if not isinstance(value, str):
        raise InvalidScopeError(f"a scope must be a str, got {type(value).__name__}: {value!r}")
    pattern = _PATTERN_RE if allow_wildcards else _CONCRETE_RE
    if len(value) <= MAX_SCOPE_LENGTH and pattern.fullmatch(value):
        return value
    raise InvalidScopeError(_explain(value, allow_wildcards=allow_wildcards))


def _explain(value: str, *, allow_wildcards: bool) -> str:
    """Say precisely why *value* is not a scope (only called on the error path)."""
    if not value:
        return "invalid scope '': a scope needs at least one segment, e.g. 'invoice:42'"
    if len(value) > MAX_SCOPE_LENGTH:
        return (
            f"invalid scope {value[:40]!r}…: {len(value)} characters, "
            f"the limit is {MAX_SCOPE_LENGTH}"
        )
    position = 0
    segments = value.split(":")
    for index, segment in enumerate(segments):
        if not segment:
            return (
                f"invalid scope {value!r}: empty segment at position {position} "
                "(segments are separated by a single ':')"
            )
        if segment in ("*", ">"):
            if not allow_wildcards:
                return (
                    f"invalid scope {value!r}: wildcard {segment!r} at position {position}; "
                    "an invalidated scope must be concrete (wildcards are for watching)"
                )
            if segment == ">" and index != len(segments) - 1:
                return (
                    f"invalid scope {value!r}: '>' at position {position} must be the last "
                    "segment (it matches all remaining segments)"
                )
        else:
            for offset, char in enumerate(segment):
                if char not in _SEGMENT_CHARS:
                    hint = (
                        "; '*' and '>' must be whole segments"
                        if char in "*>"
                        else "; segments use A-Z a-z 0-9 _ - and are separated by ':'"
                    )
                    return (
                        f"invalid scope {value!r}: character {char!r} at position "
                        f"{position + offset} is not allowed{hint}"
                    )
        position += len(segment) + 1
    return f"invalid scope {value!r}"  # pragma: no cover - the regex and this scan agree


def is_pattern(value: str) -> bool:
    """True if the (valid) scope contains a ``*`` or ``>`` segment."""
    return any(segment in ("*", ">") for segment in value.split(":"))


def scope(*parts: str | int) -> str:
    """Build a scope from parts and validate it: ``scope("invoice", 42) == "invoice:42"``.

    Each part is one segment (``"*"`` and ``">"`` included), so a part that contains
    ``:`` is refused rather than silently splitting into two segments.
    """
    if not parts:
        raise InvalidScopeError("scope() needs at least one part, e.g. scope('invoice', 42)")
    texts: list[str] = []
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, str | int):
            raise InvalidScopeError(
                f"scope parts must be str or int, got {type(part).__name__}: {part!r}"
            )
        text = str(part)
        if ":" in text:
            raise InvalidScopeError(
                f"scope part {text!r} contains ':'; pass each segment as its own part"
            )
        texts.append(text)
    return validate_scope(":".join(texts))


def scope_key(value: str) -> str:
    """The signal property name for *value* under the ``_stream`` namespace."""
    validate_scope(value)
    segments = value.split(":")
    if not value[0].isdigit() and all(
        segment in ("*", ">")
        or (_PLAIN_SEGMENT_RE.fullmatch(segment) and segment not in (_WILD, _REST))
        for segment in segments
    ):
        return "_".join(
            _WILD if segment == "*" else _REST if segment == ">" else segment
            for segment in segments
        )
    return "_" + "".join(_ESCAPES.get(char, char) for char in value)


def scope_from_key(key: str) -> str:
    """The scope whose `scope_key` is *key*; raises `InvalidScopeError` for any other string."""
    if not isinstance(key, str):
        raise InvalidScopeError(f"a key must be a str, got {type(key).__name__}: {key!r}")
    if _PLAIN_KEY_RE.fullmatch(key):
        decoded = ":".join(
            "*" if part == _WILD else ">" if part == _REST else part for part in key.split("_")
        )
    elif key.startswith("_"):
        chars: list[str] = []
        index = 1
        while index < len(key):
            char = key[index]
            if char == "_":
                code = key[index + 1 : index + 2]
                if code not in _UNESCAPES:
                    raise InvalidScopeError(
                        f"invalid key {key!r}: unknown escape {key[index : index + 2]!r} "
                        f"at position {index}"
                    )
                chars.append(_UNESCAPES[code])
                index += 2
            elif char.isascii() and char.isalnum():
                chars.append(char)
                index += 1
            else:
                raise InvalidScopeError(
                    f"invalid key {key!r}: character {char!r} at position {index}"
                )
        decoded = "".join(chars)
    else:
        raise InvalidScopeError(f"invalid key {key!r}: not a key made by scope_key()")
    try:
        validate_scope(decoded)
    except InvalidScopeError as error:
        raise InvalidScopeError(f"invalid key {key!r}: it decodes to no scope ({error})") from None
    if scope_key(decoded) != key:
        raise InvalidScopeError(
            f"invalid key {key!r}: not canonical, scope_key({decoded!r}) is {scope_key(decoded)!r}"
        )
    return decoded


def validate_prefix(prefix: object) -> str:
    """Return *prefix* if it is a valid subject prefix (dot-separated, no wildcards)."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidScopeError(
            f"invalid subject prefix {prefix!r}: use dot-separated tokens of A-Z a-z 0-9 _ -, "
            "e.g. 'streamui.scope' (or 'webx.scope' to share subjects with the Go package)"
        )
    return prefix


def scope_subject(value: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The NATS subject for a (valid) scope: ``invoice:42 -> <prefix>.invoice.42``."""
    return f"{prefix}.{value.replace(':', '.')}"


def scope_from_subject(subject: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Inverse of `scope_subject`; raises `InvalidScopeError` for a foreign subject."""
    head = prefix + "."
    if not subject.startswith(head):
        raise InvalidScopeError(f"subject {subject!r} does not start with prefix {prefix!r}")
    tail = subject[len(head) :]
    if ":" in tail:
        raise InvalidScopeError(
            f"subject {subject!r} has a ':' inside a token; no scope maps to it"
        )
    return validate_scope(tail.replace(".", ":"))


def scope_matches(pattern: str, concrete: str) -> bool:
    """True if the concrete scope is matched by *pattern* under NATS wildcard rules."""
    wanted = pattern.split(":")
    tokens = concrete.split(":")
    for index, segment in enumerate(wanted):
        if segment == ">":
            return len(tokens) > index
        if index >= len(tokens) or (segment != "*" and segment != tokens[index]):
            return False
    return len(tokens) == len(wanted)
