"""The framework-agnostic stream endpoint: every refusal is one `StreamRefused` with a
status, a reason and a `kind` from a small closed set (what a metric counts by)."""

from __future__ import annotations

import time
from typing import Any, get_args

import pytest

from streamui.errors import ExpiredTokenError, InvalidTokenError, RefusalKind, StreamRefused
from streamui.service import REFUSED_TOKENS_HEADER, StreamConfig, StreamService
from streamui.stream import EventStream
from streamui.tokens import TokenSigner

PATH = "/streamui/stream"


def http_scope(query: str, *, path: str = PATH, raw_path: bytes | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [],
    }


def service(**settings: Any) -> StreamService[dict[str, Any]]:
    settings.setdefault("secret", "unit-tests-secret-0123456789")
    return StreamService(StreamConfig(**settings), dict)


async def refusal(service: StreamService[Any], scope: dict[str, Any]) -> StreamRefused:
    with pytest.raises(StreamRefused) as caught:
        await service.stream(scope)
    return caught.value


def test_refusal_kinds_are_a_closed_set() -> None:
    assert set(get_args(RefusalKind)) == {
        "not_found",
        "missing_token",
        "too_many_tokens",
        "too_many_scopes",
        "bad_since",
        "invalid_token",
        "expired_token",
        "unauthorized",
    }


async def test_each_refusal_has_its_status_and_kind() -> None:
    endpoint = service(max_tokens=2, max_scopes=2, token_max_age=60)
    signer = endpoint.endpoint.signer
    good = signer.sign(["a:1"])
    old = signer.sign(["a:1"], issued_at=time.time() - 3600)
    wide = signer.sign(["a:1", "b:2", "c:3"])
    cases: list[tuple[dict[str, Any], int, RefusalKind]] = [
        (http_scope(f"t={good}", path=PATH + "/"), 404, "not_found"),
        (http_scope(f"t={good}", raw_path=b"/streamui/%73tream"), 404, "not_found"),
        (http_scope(""), 400, "missing_token"),
        (http_scope("t="), 400, "missing_token"),
        (http_scope(f"t={good}&t={good}&t={good}"), 400, "too_many_tokens"),
        (http_scope(f"t={wide}"), 400, "too_many_scopes"),
        (http_scope(f"t={good}&since=soon"), 400, "bad_since"),
        (http_scope("t=garbage"), 403, "invalid_token"),
        (http_scope(f"t={old}"), 403, "expired_token"),
    ]
    for scope, status, kind in cases:
        refused = await refusal(endpoint, scope)
        assert (refused.status, refused.kind) == (status, kind), (scope, refused.reason)
        assert refused.reason


async def test_the_refused_tokens_header_names_the_first_kind_and_every_index() -> None:
    endpoint = service(token_max_age=60)
    signer = endpoint.endpoint.signer
    good = signer.sign(["a:1"])
    old = signer.sign(["a:1"], issued_at=time.time() - 3600)
    refused = await refusal(endpoint, http_scope(f"t={good}&t={old}&t=garbage"))
    assert refused.kind == "expired_token"
    assert refused.headers == {REFUSED_TOKENS_HEADER: "1,2"}


async def test_authorize_gets_the_request_the_factory_makes() -> None:
    seen: list[tuple[Any, tuple[str, ...]]] = []

    def authorize(request: dict[str, Any], scopes: tuple[str, ...]) -> bool:
        seen.append((request, scopes))
        return False

    endpoint = service(authorize=authorize)
    token = endpoint.endpoint.signer.sign(["a:1", "b:*"])
    scope = http_scope(f"t={token}")
    refused = await refusal(endpoint, scope)
    assert (refused.status, refused.kind, refused.headers) == (403, "unauthorized", {})
    assert seen == [(scope, ("a:1", "b:*"))]  # the factory is dict: a copy of the scope


async def test_a_verified_request_gets_a_stream_and_merge_a_token() -> None:
    endpoint = service()
    signer = endpoint.endpoint.signer
    tokens = [signer.sign(["a:1"]), signer.sign(["b:2"])]
    scope = http_scope("&".join(f"t={token}" for token in tokens))
    assert isinstance(await endpoint.stream(scope), EventStream)
    assert signer.verify(endpoint.merge(scope)).scopes == ("a:1", "b:2")
    with pytest.raises(StreamRefused, match="missing stream token"):
        endpoint.merge(http_scope(""))


def test_an_expired_token_is_an_invalid_token() -> None:
    signer = TokenSigner("unit-tests-secret-0123456789", max_age=60)
    with pytest.raises(ExpiredTokenError, match="expired") as caught:
        signer.verify(signer.sign(["a:1"], issued_at=time.time() - 3600))
    assert isinstance(caught.value, InvalidTokenError)
