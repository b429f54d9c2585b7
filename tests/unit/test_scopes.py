"""Scopes: grammar, keys, subjects and NATS wildcard matching (Hypothesis over the grammar)."""

from __future__ import annotations

import asyncio
import itertools
import re
import string
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streamui import (
    DEFAULT_PREFIX,
    MAX_SCOPE_LENGTH,
    SIGNAL_NAMESPACE,
    InProcessTransport,
    InvalidScopeError,
    is_pattern,
    scope,
    scope_from_key,
    scope_from_subject,
    scope_key,
    scope_matches,
    scope_subject,
    validate_prefix,
    validate_scope,
)
from streamui.transports import SubjectTrie
from tests.unit.conftest import (
    SEGMENT_ALPHABET,
    concrete_scopes,
    nats_matches,
    scopes,
    segments,
)

KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

prefixes = st.lists(
    st.text(alphabet=SEGMENT_ALPHABET, min_size=1, max_size=10), min_size=1, max_size=4
).map(".".join)


def reference_is_scope(value: str, *, allow_wildcards: bool) -> bool:
    """The grammar of DESIGN.md, written independently of streamui's regular expressions."""
    if not value or len(value) > MAX_SCOPE_LENGTH:
        return False
    parts = value.split(":")
    for index, part in enumerate(parts):
        if part == "*" or (part == ">" and index == len(parts) - 1):
            if not allow_wildcards:
                return False
        elif not part or any(char not in SEGMENT_ALPHABET for char in part):
            return False
    return True


# -- keys: the Go package's spellings, round trip, injectivity ------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("invoice:42", "invoice_42"),
        ("invoices:*", "invoices_WILD"),
        ("workspace:1:*", "workspace_1_WILD"),
        ("counter:shared", "counter_shared"),
    ],
)
def test_keys_read_as_in_the_go_package(value: str, key: str) -> None:
    assert scope_key(value) == key
    assert scope_from_key(key) == value


def test_signal_namespace_is_the_go_packages() -> None:
    assert SIGNAL_NAMESPACE == "_stream"


@given(scopes())
def test_scope_from_key_inverts_scope_key(value: str) -> None:
    assert scope_from_key(scope_key(value)) == value


@given(scopes())
def test_every_key_is_a_javascript_identifier(value: str) -> None:
    assert KEY_RE.fullmatch(scope_key(value)), scope_key(value)


@given(scopes(), scopes())
def test_distinct_scopes_have_distinct_keys(first: str, second: str) -> None:
    assume(first != second)
    assert scope_key(first) != scope_key(second)


@settings(deadline=None, max_examples=30)
@given(st.lists(scopes(), min_size=10, max_size=60, unique=True))
def test_keys_of_many_scopes_never_collide(values: list[str]) -> None:
    keys = {scope_key(value) for value in values}
    assert len(keys) == len(values)


def test_keys_are_injective_over_every_short_scope() -> None:
    # Every string of up to four of these units: all short scopes over an alphabet that
    # contains each character class, the separator, both wildcards and their spellings.
    units = ["a", "Z", "1", "_", "-", ":", "*", ">", "WILD", "REST"]
    owners: dict[str, str] = {}
    valid = 0
    for length in range(1, 5):
        for combination in itertools.product(units, repeat=length):
            value = "".join(combination)
            try:
                validate_scope(value)
            except InvalidScopeError:
                assert not reference_is_scope(value, allow_wildcards=True), value
                continue
            assert reference_is_scope(value, allow_wildcards=True), value
            valid += 1
            key = scope_key(value)
            assert KEY_RE.fullmatch(key), key
            assert owners.setdefault(key, value) == value, f"{value!r} and {owners[key]!r}"
            assert scope_from_key(key) == value
    assert valid == len(owners) > 1000


@given(st.text(max_size=40))
def test_scope_from_key_accepts_exactly_the_keys_scope_key_makes(text: str) -> None:
    try:
        value = scope_from_key(text)
    except InvalidScopeError:
        return
    assert scope_key(value) == text


@given(st.text(alphabet=string.ascii_letters + string.digits + "_", max_size=30))
def test_scope_from_key_over_identifier_like_garbage(text: str) -> None:
    try:
        value = scope_from_key(text)
    except InvalidScopeError:
        return
    assert scope_key(value) == text


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "not a key made by scope_key"),
        ("_", "decodes to no scope"),
        ("_a", "not canonical"),
        ("_invoice__42", "not canonical"),
        ("a__b", "not a key made by scope_key"),
        ("1a", "not a key made by scope_key"),
        ("_x_", "unknown escape"),
        ("_x_z", "unknown escape '_z' at position 2"),
        ("_a.b", r"character '\.' at position 2"),
        ("a_REST_b", "decodes to no scope"),
        ("invoice-42", "not a key made by scope_key"),
    ],
)
def test_scope_from_key_refuses_non_canonical_and_garbage_keys(key: str, message: str) -> None:
    with pytest.raises(InvalidScopeError, match=message):
        scope_from_key(key)


def test_scope_from_key_refuses_non_strings() -> None:
    with pytest.raises(InvalidScopeError, match="a key must be a str, got int"):
        scope_from_key(42)  # type: ignore[arg-type]


# -- validation -----------------------------------------------------------------------------


def test_invalid_scope_error_is_a_value_error() -> None:
    assert issubclass(InvalidScopeError, ValueError)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "a scope needs at least one segment"),
        (":", "empty segment at position 0"),
        ("a::b", "empty segment at position 2"),
        ("a:", "empty segment at position 2"),
        ("a.b", r"character '\.' at position 1 is not allowed"),
        ("invoice:4.2", r"character '\.' at position 9 is not allowed"),
        ("a b", "character ' ' at position 1 is not allowed"),
        ("café", "character 'é' at position 3 is not allowed"),
        ("a*:b", r"character '\*' at position 1 is not allowed; '\*' and '>' must be whole"),
        ("a:b>", "character '>' at position 3 is not allowed; '\\*' and '>' must be whole"),
        (">:a", "'>' at position 0 must be the last segment"),
        ("a:>:*", "'>' at position 2 must be the last segment"),
        ("a" * (MAX_SCOPE_LENGTH + 1), "257 characters, the limit is 256"),
    ],
)
def test_invalid_scopes_are_refused_with_the_reason(value: str, message: str) -> None:
    with pytest.raises(InvalidScopeError, match=message):
        validate_scope(value)
    with pytest.raises(InvalidScopeError, match=message):
        scope_key(value)


@pytest.mark.parametrize(("value", "position"), [("*", 0), ("a:*", 2), (">", 0), ("a:b:>", 4)])
def test_wildcards_are_refused_where_a_concrete_scope_is_required(
    value: str, position: int
) -> None:
    assert validate_scope(value) == value
    with pytest.raises(InvalidScopeError, match=f"at position {position}; an invalidated scope"):
        validate_scope(value, allow_wildcards=False)


def test_validate_scope_refuses_non_strings() -> None:
    with pytest.raises(InvalidScopeError, match="a scope must be a str, got bytes"):
        validate_scope(b"invoice:42")


def test_the_length_limit_is_inclusive() -> None:
    longest = "a" * MAX_SCOPE_LENGTH
    assert validate_scope(longest) == longest
    assert scope_from_key(scope_key(longest)) == longest


@given(scopes())
def test_valid_scopes_are_accepted(value: str) -> None:
    assert validate_scope(value) == value
    assert is_pattern(value) == any(part in ("*", ">") for part in value.split(":"))
    if not is_pattern(value):
        assert validate_scope(value, allow_wildcards=False) == value


@given(st.text(alphabet=SEGMENT_ALPHABET + ":*>. é\n", max_size=20), st.booleans())
def test_validation_agrees_with_the_grammar(value: str, allow_wildcards: bool) -> None:
    try:
        validate_scope(value, allow_wildcards=allow_wildcards)
    except InvalidScopeError:
        assert not reference_is_scope(value, allow_wildcards=allow_wildcards)
    else:
        assert reference_is_scope(value, allow_wildcards=allow_wildcards)


@given(
    concrete_scopes.filter(lambda value: len(value) < MAX_SCOPE_LENGTH),
    st.characters(exclude_characters=SEGMENT_ALPHABET + ":*>", exclude_categories=["Cs"]),
    st.data(),
)
def test_the_error_names_the_bad_character_and_its_position(
    value: str, bad: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(value)))
    broken = value[:position] + bad + value[position:]
    expected = f"character {bad!r} at position {position} is not allowed"
    with pytest.raises(InvalidScopeError, match=re.escape(expected)):
        validate_scope(broken)


# -- scope() ----------------------------------------------------------------------------------


def test_scope_builds_from_parts() -> None:
    assert scope("invoice", 42) == "invoice:42"
    assert scope("workspace", 1, "*") == "workspace:1:*"
    assert scope("tenant", "a-b", ">") == "tenant:a-b:>"
    assert scope("counter") == "counter"


@given(st.lists(st.one_of(segments, st.integers(min_value=0)), min_size=1, max_size=8))
def test_scope_joins_parts_with_colons(parts: list[str | int]) -> None:
    assume(len(":".join(map(str, parts))) <= MAX_SCOPE_LENGTH)
    value = scope(*parts)
    assert value.split(":") == [str(part) for part in parts]


def test_scope_refuses_a_part_with_a_colon() -> None:
    with pytest.raises(InvalidScopeError, match="scope part 'a:b' contains ':'"):
        scope("invoice", "a:b")


@pytest.mark.parametrize("part", [True, False, 1.5, None, b"x"])
def test_scope_refuses_parts_that_are_not_str_or_int(part: object) -> None:
    with pytest.raises(InvalidScopeError, match="scope parts must be str or int"):
        scope("invoice", part)  # type: ignore[arg-type]


def test_scope_needs_a_part() -> None:
    with pytest.raises(InvalidScopeError, match="needs at least one part"):
        scope()


def test_scope_validates_the_result() -> None:
    with pytest.raises(InvalidScopeError, match=r"character '\.' at position 9"):
        scope("invoice", "4.2")
    with pytest.raises(InvalidScopeError, match="empty segment"):
        scope("invoice", "")


# -- subjects ---------------------------------------------------------------------------------


def test_subjects_with_the_default_and_the_go_prefix() -> None:
    assert DEFAULT_PREFIX == "streamui.scope"
    assert scope_subject("invoice:42") == "streamui.scope.invoice.42"
    assert scope_subject("invoice:42", "webx.scope") == "webx.scope.invoice.42"
    assert scope_subject("invoices:*", "webx.scope") == "webx.scope.invoices.*"
    assert scope_subject("workspace:>") == "streamui.scope.workspace.>"
    assert scope_from_subject("webx.scope.invoice.42", "webx.scope") == "invoice:42"


@given(scopes(), prefixes)
def test_scope_from_subject_inverts_scope_subject(value: str, prefix: str) -> None:
    subject = scope_subject(value, prefix)
    assert scope_from_subject(subject, prefix) == value
    # One subject token per segment: a scope can never widen itself into another subject.
    assert subject.split(".")[len(prefix.split(".")) :] == value.split(":")


@given(st.text(alphabet=SEGMENT_ALPHABET + ".*> é", max_size=20))
def test_scope_from_subject_refuses_or_inverts(tail: str) -> None:
    subject = f"{DEFAULT_PREFIX}.{tail}"
    try:
        value = scope_from_subject(subject)
    except InvalidScopeError:
        return
    assert scope_subject(value) == subject


def test_scope_from_subject_refuses_a_colon_inside_a_subject_token() -> None:
    # 'streamui.scope.invoice:42' is a two-token subject; no scope maps onto it.
    with pytest.raises(InvalidScopeError):
        scope_from_subject("streamui.scope.invoice:42")


@pytest.mark.parametrize(
    "subject", ["webx.scope.invoice.42", "streamui.scopes.a", "streamui.scope", "streamui.scope."]
)
def test_scope_from_subject_refuses_other_prefixes(subject: str) -> None:
    with pytest.raises(InvalidScopeError):
        scope_from_subject(subject)


@given(prefixes)
def test_valid_prefixes_are_accepted(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["", ".", "a.", ".a", "a..b", "a.*", "a.>", "*", ">", "a b", "a:b", "é", None, 1]
)
def test_invalid_prefixes_are_refused(prefix: object) -> None:
    with pytest.raises(InvalidScopeError, match=r"invalid subject prefix.*dot-separated tokens"):
        validate_prefix(prefix)


# -- matching ---------------------------------------------------------------------------------

small_concrete = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4).map(":".join)


@st.composite
def small_patterns(draw: st.DrawFn) -> str:
    """Patterns over a tiny alphabet, so that matches and near misses are both common."""
    parts = draw(st.lists(st.sampled_from(["a", "b", "*"]), max_size=4))
    if draw(st.booleans()) or not parts:
        parts.append(">")
    return ":".join(parts)


def test_matching_examples() -> None:
    assert scope_matches("invoice:42", "invoice:42")
    assert not scope_matches("invoice:42", "invoice:43")
    assert scope_matches("invoices:*", "invoices:7")
    assert not scope_matches("invoices:*", "invoices")
    assert not scope_matches("invoices:*", "invoices:7:lines")
    assert scope_matches("workspace:>", "workspace:1:doc:3")
    assert not scope_matches("workspace:>", "workspace")
    assert scope_matches(">", "anything:at:all")
    assert scope_matches("*:*:x", "a:b:x")


@given(st.one_of(small_patterns(), small_concrete, scopes()), st.one_of(small_concrete, scopes()))
def test_scope_matches_agrees_with_nats_semantics(pattern: str, concrete: str) -> None:
    assume(not is_pattern(concrete))
    assert scope_matches(pattern, concrete) == nats_matches(pattern.split(":"), concrete.split(":"))


@given(
    st.lists(small_patterns() | small_concrete, min_size=1, max_size=8),
    st.lists(small_concrete, min_size=1, max_size=8),
    st.sets(st.integers(0, 7)),
    prefixes,
)
def test_the_subject_trie_agrees_with_nats_semantics(
    patterns: list[str], subjects: list[str], removed: set[int], prefix: str
) -> None:
    trie = SubjectTrie()
    values = [object() for _ in patterns]
    for pattern, value in zip(patterns, values, strict=True):
        trie.add(scope_subject(pattern, prefix), value)
    live = set(range(len(patterns)))

    def check() -> None:
        for concrete in subjects:
            found = Counter(
                values.index(value) for value in trie.match(scope_subject(concrete, prefix))
            )
            expected = Counter(
                index
                for index in live
                if nats_matches(patterns[index].split(":"), concrete.split(":"))
            )
            assert found == expected, (patterns, concrete)

    check()
    for index in sorted(removed & live):
        trie.remove(scope_subject(patterns[index], prefix), values[index])
        live.discard(index)
    check()
    assert bool(trie) == bool(live)


def test_the_subject_trie_removes_one_value_and_prunes() -> None:
    trie = SubjectTrie()
    first, second, third = object(), object(), object()
    for value in (first, second, third):
        trie.add("p.a.*", value)
    trie.remove("p.a.*", second)
    assert trie.match("p.a.1") == [first, third]
    trie.remove("p.a.*", second)  # not there any more: nothing else goes
    trie.remove("p.b.*", first)  # never added
    assert trie.match("p.a.1") == [first, third]
    trie.remove("p.a.*", first)
    trie.remove("p.a.*", third)
    assert trie.match("p.a.1") == []
    assert not trie


@settings(deadline=None)
@given(
    st.lists(small_patterns() | small_concrete, min_size=1, max_size=8),
    st.lists(small_concrete, min_size=1, max_size=8),
)
def test_the_in_process_transport_delivers_by_nats_semantics(
    patterns: list[str], subjects: list[str]
) -> None:
    async def run() -> None:
        transport = InProcessTransport()
        calls: list[tuple[int, str, bytes]] = []
        for index, pattern in enumerate(patterns):

            def handler(subject: str, payload: bytes, index: int = index) -> None:
                calls.append((index, subject, payload))

            await transport.subscribe(scope_subject(pattern), handler)
        for concrete in subjects:
            calls.clear()
            subject = scope_subject(concrete)
            await transport.publish(subject, b"x")
            expected = [
                index
                for index, pattern in enumerate(patterns)
                if nats_matches(pattern.split(":"), concrete.split(":"))
            ]
            assert Counter(index for index, _, _ in calls) == Counter(expected)
            assert all((seen, payload) == (subject, b"x") for _, seen, payload in calls)

    asyncio.run(run())
