"""Per-key rate limits (issue 16): a token bucket per API key, rate and burst per role, 429 with
Retry-After when empty."""

from __future__ import annotations

import pytest

from kundenwert.errors import ConfigurationError
from kundenwert.serving.ratelimit import TokenBuckets, buckets_from_settings
from kundenwert.settings import DEFAULT_RATE_LIMITS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_served_then_refused_until_tokens_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets({"sales": (2.0, 5.0)}, clock)
    assert [buckets.take("k1", "sales") for _ in range(5)] == [0.0] * 5
    wait = buckets.take("k1", "sales")
    assert wait == pytest.approx(0.5)  # one token at 2/s
    assert buckets.take("k1", "sales") == pytest.approx(0.5)  # a refused request takes nothing
    clock.now += 0.5
    assert buckets.take("k1", "sales") == 0.0
    assert buckets.take("k1", "sales") > 0
    clock.now += 60  # a long pause refills up to the burst, no more
    assert [buckets.take("k1", "sales") for _ in range(6)].count(0.0) == 5


def test_another_key_and_an_unlimited_role_are_unaffected() -> None:
    buckets = TokenBuckets({"sales": (1.0, 2.0), "admin": None}, Clock())
    assert buckets.take("k1", "sales") == buckets.take("k1", "sales") == 0.0
    assert buckets.take("k1", "sales") > 0
    assert buckets.take("k2", "sales") == 0.0  # its own bucket
    assert all(buckets.take("k3", "admin") == 0.0 for _ in range(1_000))
    assert all(buckets.take("k4", "campaign") == 0.0 for _ in range(1_000))  # not configured


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert TokenBuckets.retry_after(0.01) == "1"
    assert TokenBuckets.retry_after(1.0) == "1"
    assert TokenBuckets.retry_after(2.2) == "3"


def test_limits_are_configured_per_role_over_the_defaults(monkeypatch) -> None:
    monkeypatch.setenv("KUNDENWERT_RATE_LIMITS", '{"campaign": [5, 10], "admin": null}')
    buckets = buckets_from_settings()
    assert buckets.limits["campaign"] == (5.0, 10.0)
    assert "admin" not in buckets.limits  # null: no limit
    assert buckets.limits["sales"] == DEFAULT_RATE_LIMITS["sales"]
    monkeypatch.delenv("KUNDENWERT_RATE_LIMITS")
    assert buckets_from_settings().limits == {r: v for r, v in DEFAULT_RATE_LIMITS.items() if v}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('{"salse": [5, 10]}', "unknown role(s) salse"),
        ('{"sales": [0, 10]}', "requests per second > 0"),
        ('{"sales": [5, 0.5]}', "burst >= 1"),
        ("[5, 10]", "KUNDENWERT_RATE_LIMITS: Input should be a valid dictionary"),
    ],
)
def test_a_bad_setting_is_refused_with_a_clear_message(monkeypatch, value: str, says: str) -> None:
    monkeypatch.setenv("KUNDENWERT_RATE_LIMITS", value)
    with pytest.raises(ConfigurationError, match="KUNDENWERT_") as err:
        buckets_from_settings()
    assert says in str(err.value)


def test_the_api_answers_429_with_retry_after_per_key(served) -> None:
    """Over the limit, next best actions and every other route of the key answer 429 with
    Retry-After; a key of another role and another key of the same role go on; tokens refill."""
    c, keys = served["client"], served["keys"]
    cid = served["customers"][0]
    clock = Clock()
    # by hand, not monkeypatch.setattr: starlette's State keeps attributes in a dict of its own,
    # and monkeypatch's undo deleted the app's buckets for every later test of the served world
    before = c.app.state.buckets
    c.app.state.buckets = TokenBuckets({"sales": (0.5, 3.0)}, clock)
    try:
        _limited(c, keys, cid, clock, served)
    finally:
        c.app.state.buckets = before


def _limited(c, keys, cid, clock, served) -> None:
    nba = f"/v1/customers/{cid}/next-best-actions"
    sales = {"X-API-Key": keys["sales"]}
    assert [c.get(nba, headers=sales).status_code for _ in range(3)] == [200] * 3
    refused = c.get(nba, headers=sales)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"  # one token at 0.5/s
    assert c.get(f"/v1/customers/{cid}", headers=sales).status_code == 429  # per key, not per route
    assert c.get(nba, headers={"X-API-Key": keys["data_science"]}).status_code == 200
    from kundenwert.serving.keys import create_key

    other = create_key(served["store"].engine, "sales", "rate-limit test")
    c.app.state.keys.refresh()
    assert c.get(nba, headers={"X-API-Key": other}).status_code == 200
    clock.now += 2.0
    assert c.get(nba, headers=sales).status_code == 200
    assert c.get(nba, headers=sales).status_code == 429
    # an invalid key is a 401, and takes no bucket
    assert c.get(nba, headers={"X-API-Key": "kw_nope_nope"}).status_code == 401
    assert "nope" not in c.app.state.buckets._buckets
