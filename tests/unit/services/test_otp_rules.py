from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections.abc import Callable

import pytest

from registration.otp import rules
from registration.otp.rules import AuthStatus, CreateStatus, OtpPolicy
from tests.unit.services.fakes import FakeClock, MemoryOtpStore

EMAIL = "alice@example.org"
POLICY = OtpPolicy(otp_ttl=300, max_attempts=5, lock_seconds=900, auth_ttl=600)


def make_store() -> tuple[MemoryOtpStore, FakeClock]:
    clock = FakeClock()
    store = MemoryOtpStore(clock)
    asyncio.run(rules.set_eligible(store, [EMAIL]))
    return store, clock


def create(store: MemoryOtpStore, clock: FakeClock, email: str = EMAIL) -> rules.CreateResult:
    return asyncio.run(rules.create_otp(store, email, POLICY, clock=clock))


def authen(store: MemoryOtpStore, clock: FakeClock, otp: str, email: str = EMAIL) -> AuthStatus:
    return asyncio.run(rules.authenticate(store, email, otp, POLICY, clock=clock))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_generated_otps_are_six_digits_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    codes = {rules.generate_otp() for _ in range(200)}
    assert all(re.fullmatch(r"[0-9]{6}", c) for c in codes)
    assert len(codes) > 150  # random, not constant
    calls: list[int] = []

    def fake_randbelow(n: int) -> int:
        calls.append(n)
        return 42

    monkeypatch.setattr(secrets, "randbelow", fake_randbelow)
    assert rules.generate_otp() == "000042"
    assert calls == [1_000_000]


def test_unknown_email_gets_no_otp_and_cannot_authenticate() -> None:
    store, clock = make_store()
    result = create(store, clock, "mallory@example.org")
    assert result.status is CreateStatus.UNKNOWN_EMAIL
    assert result.otp is None
    assert store.peek_code("mallory@example.org") is None
    assert authen(store, clock, "123456", "mallory@example.org") is AuthStatus.UNKNOWN_EMAIL


def test_invalid_email_refused() -> None:
    store, clock = make_store()
    assert create(store, clock, "not-an-email").status is CreateStatus.INVALID_EMAIL


def test_email_is_normalised() -> None:
    store, clock = make_store()
    result = create(store, clock, "  Alice@Example.ORG ")
    assert result.status is CreateStatus.CREATED
    assert result.otp is not None
    assert authen(store, clock, result.otp, "ALICE@example.org") is AuthStatus.OK


def test_right_otp_authenticates_once_and_sets_marker() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None and re.fullmatch(r"[0-9]{6}", code)
    assert authen(store, clock, code) is AuthStatus.OK
    assert asyncio.run(store.is_authenticated(EMAIL))
    # single use
    assert authen(store, clock, code) is AuthStatus.EXPIRED
    # the marker is consumed once
    assert asyncio.run(rules.consume_authenticated(store, EMAIL)) is True
    assert asyncio.run(rules.consume_authenticated(store, EMAIL)) is False


def test_marker_expires() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None
    assert authen(store, clock, code) is AuthStatus.OK
    clock.advance(POLICY.auth_ttl + 1)
    assert asyncio.run(rules.is_authenticated(store, EMAIL)) is False


def test_otp_expires_after_ttl() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None
    clock.advance(POLICY.otp_ttl - 1)
    assert asyncio.run(store.get_otp(EMAIL)) is not None
    clock.advance(1)
    assert authen(store, clock, code) is AuthStatus.EXPIRED
    assert not asyncio.run(store.is_authenticated(EMAIL))


def test_expiry_is_checked_by_the_rules_even_if_the_store_keeps_the_key() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None
    # a store that ignores TTLs: the rules still refuse a stale code
    raw = asyncio.run(store.get_otp(EMAIL))
    assert raw is not None
    asyncio.run(store.put_otp(EMAIL, raw, 10**9))
    clock.advance(POLICY.otp_ttl + 5)
    assert authen(store, clock, code) is AuthStatus.EXPIRED


def test_lockout_after_five_wrong_attempts_refuses_the_right_otp() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None
    for _ in range(POLICY.max_attempts):
        assert authen(store, clock, wrong(code)) is AuthStatus.INVALID
    # 6th attempt, with the right code: refused
    assert authen(store, clock, code) is AuthStatus.LOCKED
    assert not asyncio.run(store.is_authenticated(EMAIL))
    # no new OTP while locked
    assert create(store, clock).status is CreateStatus.LOCKED
    clock.advance(POLICY.lock_seconds - 1)
    assert create(store, clock).status is CreateStatus.LOCKED
    # after the lock period a new OTP works again
    clock.advance(2)
    fresh = create(store, clock)
    assert fresh.status is CreateStatus.CREATED and fresh.otp is not None
    assert authen(store, clock, fresh.otp) is AuthStatus.OK


def test_four_wrong_attempts_do_not_lock() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None
    for _ in range(POLICY.max_attempts - 1):
        assert authen(store, clock, wrong(code)) is AuthStatus.INVALID
    assert authen(store, clock, code) is AuthStatus.OK


def test_requesting_a_new_otp_does_not_reset_the_failure_count() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None
    for _ in range(POLICY.max_attempts - 1):
        assert authen(store, clock, wrong(code)) is AuthStatus.INVALID
    code2 = create(store, clock).otp
    assert code2 is not None
    assert authen(store, clock, wrong(code2)) is AuthStatus.INVALID
    assert authen(store, clock, code2) is AuthStatus.LOCKED


def test_constant_time_compare_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None
    seen: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert authen(store, clock, wrong(code)) is AuthStatus.INVALID
    assert authen(store, clock, code) is AuthStatus.OK
    assert len(seen) == 2
    assert seen[1] == (code.encode(), code.encode())


def test_concurrent_checks_of_one_otp_succeed_once() -> None:
    store, clock = make_store()
    code = create(store, clock).otp
    assert code is not None

    async def both() -> list[AuthStatus]:
        return list(
            await asyncio.gather(
                rules.authenticate(store, EMAIL, code, POLICY, clock=clock),
                rules.authenticate(store, EMAIL, code, POLICY, clock=clock),
            )
        )

    results = asyncio.run(both())
    assert sorted(results) == sorted([AuthStatus.OK, AuthStatus.EXPIRED])


def test_no_otp_requested() -> None:
    store, clock = make_store()
    assert authen(store, clock, "123456") is AuthStatus.EXPIRED


def test_set_eligible_rejects_invalid_entries() -> None:
    store = MemoryOtpStore()
    added, rejected = asyncio.run(rules.set_eligible(store, ["A@x.org", "bad", "b@y.org", "a@x.org"]))
    assert added == 2
    assert rejected == ["bad"]
    assert store.eligible == {"a@x.org", "b@y.org"}


def test_create_result_repr_hides_the_code() -> None:
    result = rules.CreateResult(CreateStatus.CREATED, "123456")
    assert "123456" not in repr(result)


def test_policy_rejects_non_positive_values() -> None:
    with pytest.raises(ValueError):
        OtpPolicy(max_attempts=0)
