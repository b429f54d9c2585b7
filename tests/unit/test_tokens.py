"""Stream tokens: what Connect signs and the stream endpoint verifies."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamui import (
    ConfigurationError,
    InvalidScopeError,
    InvalidTokenError,
    StreamToken,
    TokenSigner,
)
from tests.unit.conftest import scopes

SECRET = "a-test-secret-that-is-long-enough"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed(signer: TokenSigner, payload: bytes) -> str:
    """A token whose MAC is valid for an arbitrary payload (what only the secret can make)."""
    return f"{b64(payload)}.{b64(signer._mac(payload))}"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


def test_round_trip(signer: TokenSigner) -> None:
    token = signer.sign(["invoice:42", "invoices:*", "workspace:1:>"], issued_at=1_700_000_000.5)
    assert signer.verify(token) == StreamToken(
        ("invoice:42", "invoices:*", "workspace:1:>"), 1_700_000_000.5
    )


@given(st.lists(scopes(), min_size=1, max_size=8), st.floats(0, 4_000_000_000))
def test_round_trip_over_any_scopes(values: list[str], issued_at: float) -> None:
    signer = TokenSigner(SECRET)
    token = signer.sign(values, issued_at=issued_at)
    verified = signer.verify(token)
    assert verified.scopes == tuple(values)
    # Kept to the millisecond, never later than signed: a stream's catch-up may push a
    # scope once too often, but never miss one.
    assert issued_at - 0.001 <= verified.issued_at <= issued_at
    # The token travels in a query string unescaped: it must be URL-safe as it is.
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_issued_at_defaults_to_now_and_is_kept_to_the_millisecond(signer: TokenSigner) -> None:
    before = time.time()
    verified = signer.verify(signer.sign(["a"]))
    after = time.time()
    assert before - 0.001 <= verified.issued_at <= after
    assert signer.verify(signer.sign(["a"], issued_at=12.3456789)).issued_at == 12.345


def test_a_secret_given_as_str_or_bytes_is_the_same_secret() -> None:
    token = TokenSigner(SECRET).sign(["a:1"])
    assert TokenSigner(SECRET.encode()).verify(token).scopes == ("a:1",)


def test_sign_validates_the_scopes(signer: TokenSigner) -> None:
    with pytest.raises(InvalidScopeError, match=r"character '\.' at position 1"):
        signer.sign(["a.b"])
    with pytest.raises(InvalidScopeError, match="a stream token needs at least one scope"):
        signer.sign([])


# -- tampering ------------------------------------------------------------------------------


def test_a_tampered_payload_is_refused(signer: TokenSigner) -> None:
    token = signer.sign(["tenant:1:invoice:42"])
    payload, mac = token.split(".")
    body = json.loads(unb64(payload))
    for forged in (["tenant:2:invoice:42"], ["tenant:1:>"], ["tenant:1:invoice:42", ">"]):
        changed = b64(json.dumps({**body, "s": forged}, separators=(",", ":")).encode())
        with pytest.raises(InvalidTokenError, match="signature does not match"):
            signer.verify(f"{changed}.{mac}")


def test_a_tampered_mac_is_refused(signer: TokenSigner) -> None:
    payload, mac = signer.sign(["a:1"]).split(".")
    middle = len(mac) // 2
    flipped = mac[:middle] + ("A" if mac[middle] != "A" else "B") + mac[middle + 1 :]
    with pytest.raises(InvalidTokenError, match="signature does not match"):
        signer.verify(f"{payload}.{flipped}")
    with pytest.raises(InvalidTokenError, match="signature does not match"):
        signer.verify(f"{payload}.")
    with pytest.raises(InvalidTokenError, match="signature does not match"):
        signer.verify(payload)


def test_a_token_of_another_secret_is_refused(signer: TokenSigner) -> None:
    token = TokenSigner("another-secret-also-long-enough").sign(["a:1"])
    with pytest.raises(
        InvalidTokenError, match=r"signature does not match \(tampered, or signed with another"
    ):
        signer.verify(token)


def test_random_secrets_differ() -> None:
    token = TokenSigner().sign(["a:1"])
    with pytest.raises(InvalidTokenError, match="signature does not match"):
        TokenSigner().verify(token)


def test_an_empty_token_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(InvalidTokenError, match="missing stream token"):
        signer.verify("")


@pytest.mark.parametrize("garbage", ["é.x", "\x00é.abc", "a.b.c\x00é"])
def test_a_token_that_is_not_base64_is_refused(signer: TokenSigner, garbage: str) -> None:
    with pytest.raises(InvalidTokenError, match=r"malformed stream token \(not base64\)"):
        signer.verify(garbage)


def test_an_overlong_token_is_refused(signer: TokenSigner) -> None:
    with pytest.raises(InvalidTokenError, match=r"stream token too long \(40000 characters\)"):
        signer.verify("a" * 40_000)


@given(st.text(max_size=200))
def test_garbage_is_always_refused_with_invalid_token_error(garbage: str) -> None:
    with pytest.raises(InvalidTokenError):
        TokenSigner(SECRET).verify(garbage)


@given(st.data())
def test_any_edit_either_is_refused_or_changes_nothing(data: st.DataObject) -> None:
    # The security property: whatever a client does to a token, it cannot make it say
    # anything but what was signed.
    signer = TokenSigner(SECRET)
    token = signer.sign(data.draw(st.lists(scopes(), min_size=1, max_size=3)), issued_at=1.0)
    original = signer.verify(token)
    position = data.draw(st.integers(0, len(token)))
    edit = data.draw(st.sampled_from(["insert", "replace", "delete"]))
    char = data.draw(st.characters(codec="ascii"))
    if edit == "insert":
        edited = token[:position] + char + token[position:]
    elif edit == "replace":
        edited = token[:position] + char + token[position + 1 :]
    else:
        edited = token[:position] + token[position + 1 :]
    try:
        verified = signer.verify(edited)
    except InvalidTokenError:
        return
    assert verified == original


def test_only_the_exact_signed_spelling_is_accepted(signer: TokenSigner) -> None:
    token = signer.sign(["a:1"])
    payload, mac = token.split(".")
    # 32 MAC bytes use 43 characters: the last one carries 2 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spellings = [token + "=", f"{payload}=.{mac}", f"{payload}.{mac}!", f"!{token}"]
    spellings += [f" {token}", f"{token}\n", f"{payload}.{mac}{mac[-1]}"]
    standard = token.replace("-", "+").replace("_", "/")  # the other base64 alphabet
    spellings += [standard] if standard != token else []
    spellings += [f"{payload}.{mac[:-1]}{char}" for char in alphabet if char != mac[-1]]
    accepted = []
    for spelling in spellings:
        try:
            signer.verify(spelling)
        except InvalidTokenError:
            continue
        accepted.append(spelling)
    assert accepted == []


# -- payloads only the secret can make -------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "malformed stream token payload"),
        (b"\xff\xfe", "malformed stream token payload"),
        (b"[]", "malformed stream token payload"),
        (b'{"t": 1}', "malformed stream token payload"),
        (b'{"s": ["a"]}', "malformed stream token payload"),
        (b'{"s": ["a.b"], "t": 1}', r"invalid scope 'a\.b'"),
        (b'{"s": [1], "t": 1}', "malformed stream token payload"),
        (b'{"s": ["a"], "t": "x"}', "malformed stream token payload"),
        (b'{"s": ["a"], "t": NaN}', "malformed stream token payload"),
        (b'{"s": ["a"], "t": 1e400}', "malformed stream token payload"),
        (b'{"s": ["a"], "t": 1.5}', "malformed stream token payload"),
        (b'{"s": ["a"], "t": -1}', "malformed stream token payload"),
        (b'{"s": ["a"], "t": true}', "malformed stream token payload"),
        (b'{"s": "abc", "t": 1}', "malformed stream token payload"),
        (b'{"s": [], "t": 1}', "malformed stream token payload: it names no scope"),
        (b'{"s": ["a"], "t": 1, "e": "soon"}', "'e' is not a time in ms"),
        (b'{"s": ["a"], "t": 1, "e": -5}', "'e' is not a time in ms"),
        (b'{"s": ["a"], "t": 1, "e": 1.5}', "'e' is not a time in ms"),
        (b'{"s": ["a"], "t": 1, "e": false}', "'e' is not a time in ms"),
        (b"[" * 5_000, "malformed stream token payload"),
    ],
)
def test_a_signed_but_malformed_payload_is_refused(
    signer: TokenSigner, payload: bytes, message: str
) -> None:
    with pytest.raises(InvalidTokenError, match=message):
        signer.verify(signed(signer, payload))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["s", "t", "x"]), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.one_of(
        _json,
        st.fixed_dictionaries(
            {"s": st.one_of(_json, st.lists(st.one_of(scopes(), _json), max_size=3)), "t": _json}
        ),
    )
)
def test_any_signed_payload_verifies_or_is_refused_cleanly(body: object) -> None:
    # Even a payload only the secret can make never escapes as another exception (a 500).
    signer = TokenSigner(SECRET)
    try:
        verified = signer.verify(signed(signer, json.dumps(body).encode()))
    except InvalidTokenError:
        return
    assert verified.scopes
    assert verified.issued_at >= 0


# -- expiry and configuration ---------------------------------------------------------------


def test_tokens_do_not_expire_by_default(signer: TokenSigner) -> None:
    token = signer.sign(["a:1"], issued_at=time.time() - 365 * 24 * 3600)
    assert signer.verify(token).scopes == ("a:1",)


def test_max_age_refuses_an_old_token() -> None:
    signer = TokenSigner(SECRET, max_age=60)
    with pytest.raises(InvalidTokenError, match=r"stream token expired \(older than 60 s\)"):
        signer.verify(signer.sign(["a:1"], issued_at=time.time() - 120))
    assert signer.verify(signer.sign(["a:1"], issued_at=time.time() - 30)).scopes == ("a:1",)


def test_a_token_with_a_lifetime_expires_and_a_renewal_extends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    signer = TokenSigner(SECRET, lifetime=60)
    rendered = now[0] - 5
    token = signer.sign(["a:1", "b:*"], issued_at=rendered)
    claims = signer.verify(token)
    assert claims.expires_at == pytest.approx(now[0] + 60)
    now[0] += 59
    renewed = signer.renew(signer.verify(token))
    now[0] += 2  # 61 s after the first signing: the first token is expired
    with pytest.raises(InvalidTokenError, match=r"stream token expired 1 s ago \(it lives 60 s"):
        signer.verify(token)
    # The renewal keeps what the token grants and when the page was rendered.
    again = signer.verify(renewed)
    assert again == claims
    assert again.issued_at == pytest.approx(rendered)
    assert again.expires_at == pytest.approx(now[0] - 2 + 60)
    now[0] += 59
    with pytest.raises(InvalidTokenError, match="stream token expired"):
        signer.verify(renewed)


def test_a_token_without_an_expiry_expires_a_lifetime_after_its_render(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Signed before lifetimes existed (or by a signer without one).
    old = TokenSigner(SECRET).sign(["a:1"], issued_at=time.time() - 120)
    assert TokenSigner(SECRET).verify(old).expires_at is None
    with pytest.raises(InvalidTokenError, match="stream token expired"):
        TokenSigner(SECRET, lifetime=60).verify(old)
    assert TokenSigner(SECRET, lifetime=600).verify(old).scopes == ("a:1",)


@pytest.mark.parametrize("lifetime", [0, -1.0, float("nan")])
def test_a_lifetime_must_be_positive(lifetime: float) -> None:
    with pytest.raises(ConfigurationError, match="lifetime must be positive seconds"):
        TokenSigner(SECRET, lifetime=lifetime)


@pytest.mark.parametrize("max_age", [0, -1.0])
def test_max_age_must_be_positive(max_age: float) -> None:
    with pytest.raises(ConfigurationError, match="max_age must be positive seconds"):
        TokenSigner(SECRET, max_age=max_age)


@pytest.mark.parametrize("secret", ["", "short", b"fifteen bytes!!"])
def test_a_short_secret_is_a_configuration_error(secret: str | bytes) -> None:
    with pytest.raises(
        ConfigurationError, match=rf"secret is {len(secret)} bytes; use at least 16"
    ):
        TokenSigner(secret)


def test_sixteen_bytes_are_enough() -> None:
    signer = TokenSigner(b"x" * 16)
    assert signer.verify(signer.sign(["a"])).scopes == ("a",)


# -- the instance that signed a token ------------------------------------------------------


def test_a_token_names_the_process_that_signed_it(signer: TokenSigner) -> None:
    from streamui.tokens import process_instance

    instance = process_instance()
    assert len(instance) == 8
    assert set(instance) <= set("0123456789abcdef")
    assert signer.instance == instance
    assert signer.verify(signer.sign(["a:1"])).instance == instance
    assert json.loads(unb64(signer.sign(["a:1"]).split(".")[0]))["i"] == instance


def test_the_instance_round_trips_and_any_process_with_the_secret_reads_it() -> None:
    other = TokenSigner(SECRET, instance="5151b11e")
    token = other.sign(["a:1", "b:*"], issued_at=1_700_000_000.5)
    verified = TokenSigner(SECRET).verify(token)
    assert verified.instance == "5151b11e"
    assert verified.scopes == ("a:1", "b:*")
    assert verified.issued_at == 1_700_000_000.5
    # The instance grants nothing, so it takes no part in what a token is equal to.
    assert verified == StreamToken(("a:1", "b:*"), 1_700_000_000.5)


def test_a_token_keeps_short(signer: TokenSigner) -> None:
    assert len(signer.sign(["invoice:42"], issued_at=1_700_000_000)) <= 120


def test_a_token_without_an_instance_still_verifies(signer: TokenSigner) -> None:
    # What tokens looked like before they named their process (open tabs keep them).
    token = signed(signer, b'{"s":["a:1"],"t":1700000000500}')
    verified = signer.verify(token)
    assert verified.instance is None
    assert verified.scopes == ("a:1",)
    assert verified.issued_at == 1_700_000_000.5
    assert signer.verify(signed(signer, b'{"s":["a:1"],"t":1,"i":null}')).instance is None


def test_an_edited_instance_is_refused(signer: TokenSigner) -> None:
    token = signer.sign(["a:1"])
    payload, mac = token.split(".")
    body = json.loads(unb64(payload))
    edits = [{**body, "i": "5151b11e"}, {key: value for key, value in body.items() if key != "i"}]
    for edited in edits:
        changed = b64(json.dumps(edited, separators=(",", ":")).encode())
        with pytest.raises(InvalidTokenError, match="signature does not match"):
            signer.verify(f"{changed}.{mac}")


@pytest.mark.parametrize("instance", [1, "", "x" * 33, "a b", "a.b", ["a"], "é"])
def test_a_signed_malformed_instance_is_refused(signer: TokenSigner, instance: object) -> None:
    payload = json.dumps({"s": ["a"], "t": 1, "i": instance}).encode()
    with pytest.raises(InvalidTokenError, match="'i' is not an instance id"):
        signer.verify(signed(signer, payload))


@pytest.mark.parametrize("instance", ["", "x" * 33, "a b", "a\nb"])
def test_an_unusable_instance_is_a_configuration_error(instance: str) -> None:
    with pytest.raises(
        ConfigurationError, match=r"instance must be 1 to 32 characters of A-Z a-z 0-9 _ -"
    ):
        TokenSigner(SECRET, instance=instance)


_FORK_AND_SIGN = """
import json, os, sys, threading
from streamui.tokens import TokenSigner, process_instance

# Built before the fork, as by a server that loads the app before forking workers.
signer = TokenSigner(sys.argv[1])
threads = threading.active_count()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    os.write(write, (signer.verify(signer.sign(["a"])).instance or "").encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as pipe:
    in_child = pipe.read()
_, status = os.waitpid(pid, 0)
print(json.dumps({
    "threads": threads,
    "exit": os.waitstatus_to_exitcode(status),
    "in_child": in_child,
    "in_parent": process_instance(),
    "signer_in_parent": signer.instance,
}))
"""


def test_a_forked_child_is_another_instance() -> None:
    # Forked from a fresh interpreter: this test process has threads by now (thread
    # pools, a nats-server's readers), and forking a process with threads may deadlock
    # the child (3.12 warns). Any warning fails the run.
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", _FORK_AND_SIGN, SECRET],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["threads"] == 1, seen  # the fork was from a single-threaded process
    assert seen["exit"] == 0, seen
    assert len(seen["in_child"]) == 8, seen
    assert seen["in_child"] != seen["in_parent"], seen
    assert seen["signer_in_parent"] == seen["in_parent"], seen


def test_unverified_claims_read_any_well_formed_token_and_nothing_else() -> None:
    from streamui.tokens import unverified_claims

    foreign = TokenSigner(instance="5151b11e").sign(["a:1"], issued_at=12.5)
    claims = unverified_claims(foreign)
    assert claims is not None
    assert (claims.scopes, claims.issued_at, claims.instance) == (("a:1",), 12.5, "5151b11e")
    forged = b64(b'{"s":["a:>"],"t":1,"i":"x"}')  # no MAC at all: still only claims
    assert unverified_claims(forged) == StreamToken(("a:>",), 0.001)
    for garbage in ("", "garbage", "é.x", b64(b'{"s":[]}'), b64(b'{"i":1}'), "a" * 40_000):
        assert unverified_claims(garbage) is None
