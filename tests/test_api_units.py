"""Pure parts of the API: command policy and reply transitions, pass rules,
cursors, tokens and the generated secret key."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.commands.policy import POLICY, TERMINAL, check_command, reply_transition
from api.errors import ApiError
from api.pagination import decode_cursor, encode_cursor
from api.routes.visitor_passes import judge
from api.scope import Role
from api.security import decode_access_token, issue_access_token, load_or_create_secret

STATES = ["queued", "sent", "accepted", "done", "rejected", "failed", "expired", "timed_out", "awaiting_confirmation"]


@given(st.sampled_from(STATES), st.sampled_from(["accepted", "done", "rejected", "failed"]))
def test_terminal_commands_never_change_and_done_needs_a_reply(state: str, status: str) -> None:
    new = reply_transition(state, status)
    if state in TERMINAL or state == "awaiting_confirmation":
        assert new is None
    if new is not None:
        assert new == status


def test_disable_detector_needs_reason_and_bounded_expiry() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    ok = {"detector": "smoke-1", "reason": "dusty renovation", "until": (now + timedelta(hours=2)).isoformat()}
    spec, args = check_command("fire_panel", "disable_detector", ok, Role.operator, now=now)
    assert spec.dangerous and args["until"] == "2026-11-23T14:00:00+00:00"
    for bad in ({**ok, "reason": "x"}, {k: v for k, v in ok.items() if k != "until"},
                {**ok, "until": (now + timedelta(days=2)).isoformat()}, {**ok, "until": "2026-11-23T13:00:00"}):
        with pytest.raises(ApiError) as err:
            check_command("fire_panel", "disable_detector", bad, Role.operator, now=now)
        assert err.value.status == 422
    with pytest.raises(ApiError) as err:
        check_command("fire_panel", "disable_detector", ok, Role.technician, now=now)
    assert err.value.status == 403


def test_allow_list_covers_the_required_commands() -> None:
    assert set(POLICY["elevator"]) >= {"return_to_main_floor", "out_of_service", "back_to_service"}
    assert set(POLICY["gate"]) >= {"open_once", "hold_open", "lock", "back_to_normal"}
    assert set(POLICY["fire_panel"]) >= {"silence", "reset"}
    with pytest.raises(ApiError):
        check_command("parking_lane", "open_barrier", {}, Role.admin)


def test_visitor_pass_rules() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    row = {"revoked_at": None, "valid_from": now - timedelta(hours=1), "valid_until": now + timedelta(hours=1),
           "gates": ["g1"], "uses": 0, "max_uses": 1}
    assert judge(row, "g1", now) == "ok"
    assert judge(row, "g2", now) == "wrong_gate"
    assert judge({**row, "uses": 1}, "g1", now) == "used_up"
    assert judge({**row, "revoked_at": now}, "g1", now) == "revoked"
    assert judge(row, "g1", now + timedelta(hours=1)) == "expired"
    assert judge(row, "g1", now - timedelta(hours=2)) == "not_yet_valid"
    assert judge(None, "g1", now) == "unknown"


@given(st.lists(st.one_of(st.integers(min_value=-(2**62), max_value=2**62), st.text(max_size=30)), min_size=1, max_size=3))
def test_cursor_round_trip(values: list[object]) -> None:
    types = tuple(int if isinstance(v, int) else str for v in values)
    assert decode_cursor(encode_cursor(values), types) == values


@given(st.text(max_size=50))
def test_garbage_cursor_is_a_422(text: str) -> None:
    try:
        decode_cursor(text, (int,))
    except ApiError as err:
        assert err.status == 422


def test_tokens_expire_and_need_the_key() -> None:
    now = datetime.now(UTC)
    token = issue_access_token(secret="k" * 40, user_id=7, username="u", ttl=timedelta(minutes=5), now=now)
    claims = decode_access_token(token, secret="k" * 40)
    assert claims is not None and claims.user_id == 7
    assert decode_access_token(token, secret="x" * 40) is None
    old = issue_access_token(secret="k" * 40, user_id=7, username="u", ttl=timedelta(minutes=5), now=now - timedelta(minutes=6))
    assert decode_access_token(old, secret="k" * 40) is None


def test_secret_key_generated_once_and_private(tmp_path, caplog) -> None:
    first = load_or_create_secret(None, tmp_path / "data")
    assert "HUB_SECRET_KEY is not set" in caplog.text
    assert first not in caplog.text
    assert load_or_create_secret(None, tmp_path / "data") == first
    assert stat.S_IMODE((tmp_path / "data" / "secret_key").stat().st_mode) == 0o600
    assert load_or_create_secret("configured", tmp_path / "data") == "configured"
