"""Property tests (hypothesis): address normalisation and signed tokens."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mailing.config import Settings, get_settings
from mailing.errors import InvalidLink
from mailing.subscribers.addresses import MAX_ADDRESS_LENGTH, InvalidAddress, normalise
from mailing.subscribers.tokens import Purpose, sign, verify

# --- Address normalisation ----------------------------------------------------------------

local_part = st.text(string.ascii_letters + string.digits + ".+_-", min_size=1, max_size=64)
domain = st.from_regex(r"\A[a-zA-Z][a-zA-Z0-9-]{0,20}\.(org|com|uk|example)\Z")
addresses = st.builds(lambda lp, d: f"{lp}@{d}", local_part, domain)
# Mostly plausible addresses, some arbitrary text, some over-long ones.
any_input = st.one_of(
    addresses,
    st.text(max_size=300),
    st.builds(lambda n: "a" * n + "@example.org", st.integers(200, 300)),
    st.builds(lambda s, a: s + a + s, st.sampled_from(["", " ", "\t"]), addresses),
)


def _accepted(raw: str):
    try:
        return normalise(raw)
    except InvalidAddress:
        return None


@given(any_input)
@settings(max_examples=300, deadline=None)
def test_normalising_twice_changes_nothing(raw):
    once = _accepted(raw)
    assume(once is not None)
    assert normalise(once.email) == once


@given(addresses, st.data())
@settings(max_examples=300, deadline=None)
def test_the_identity_key_ignores_case(raw, data):
    address = _accepted(raw)
    assume(address is not None)
    # Swap the case of any subset of the characters.
    flips = data.draw(st.lists(st.booleans(), min_size=len(raw), max_size=len(raw)))
    swapped = "".join(c.swapcase() if f else c for c, f in zip(raw, flips, strict=True))
    other = _accepted(swapped)
    if other is not None:
        assert other.key == address.key == address.key.lower()


@given(
    st.text(max_size=80),
    st.sampled_from(["\r", "\n", "\r\n", "\x00"]),
    st.text(max_size=80),
)
@settings(max_examples=300, deadline=None)
def test_a_line_break_or_nul_is_never_accepted(before, brk, after):
    with pytest.raises(InvalidAddress):
        normalise(f"{before}{brk}{after}")
    with pytest.raises(InvalidAddress):
        normalise(f"someone{brk}@example.org")


@given(any_input)
@settings(max_examples=300, deadline=None)
def test_an_accepted_address_is_short_and_has_exactly_one_at(raw):
    address = _accepted(raw)
    assume(address is not None)
    assert len(address.email) <= MAX_ADDRESS_LENGTH
    assert address.email.count("@") == 1
    assert not any(c in address.email for c in "\r\n\x00")


# --- Tokens -------------------------------------------------------------------------------

payloads = st.fixed_dictionaries(
    {"s": st.integers(1, 2**31), "v": st.integers(0, 1000)},
    optional={"t": st.lists(st.sampled_from(["healthy-minds", "healthy-places"]), max_size=2)},
)
URLSAFE = string.ascii_letters + string.digits + "-_."


@given(st.sampled_from(list(Purpose)), payloads, st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_change_to_a_token_is_rejected(purpose, payload, data):
    token = sign(purpose, payload)
    assert verify(purpose, token) == payload
    i = data.draw(st.integers(0, len(token) - 1), label="position")
    change = data.draw(
        st.one_of(
            st.sampled_from(URLSAFE).map(lambda c: token[:i] + c + token[i + 1 :]),  # flip
            st.just(token[:i] + token[i + 1 :]),  # delete
            st.sampled_from(URLSAFE).map(lambda c: token[:i] + c + token[i:]),  # insert
            st.just(token + "A"),  # append
        ),
        label="altered",
    )
    assume(change != token)
    with pytest.raises(InvalidLink):
        verify(purpose, change)


@given(st.sampled_from(list(Purpose)), st.sampled_from(list(Purpose)), payloads)
@settings(max_examples=100, deadline=None)
def test_a_token_never_verifies_for_another_purpose(made_for, used_for, payload):
    assume(made_for != used_for)
    with pytest.raises(InvalidLink):
        verify(used_for, sign(made_for, payload))


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_arbitrary_text_is_never_a_valid_token(text):
    for purpose in Purpose:
        with pytest.raises(InvalidLink):
            verify(purpose, text)


OLD_KEY = "old-key-" + "o" * 40
NEW_KEY = "new-key-" + "n" * 40


@pytest.fixture
def rotated(settings_env):
    """The keys after a rotation: a new key signs, the old one still verifies."""
    settings_env(secret_keys=f"{NEW_KEY},{OLD_KEY}")
    assert get_settings().secret_key_list == [NEW_KEY, OLD_KEY]


@given(st.sampled_from(list(Purpose)), payloads)
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_token_signed_before_a_key_rotation_still_verifies(rotated, purpose, payload):
    before = Settings(secret_keys=OLD_KEY)  # the settings when the email was sent
    old_token = sign(purpose, payload, before)
    assert verify(purpose, old_token) == payload
    # New links are signed with the new key: the old key alone no longer verifies them.
    new_token = sign(purpose, payload)
    assert verify(purpose, new_token) == payload
    with pytest.raises(InvalidLink):
        verify(purpose, new_token, before)


@given(st.sampled_from(list(Purpose)), payloads)
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_token_from_a_retired_key_is_rejected(settings_env, purpose, payload):
    settings_env(secret_keys=NEW_KEY)
    with pytest.raises(InvalidLink):
        verify(purpose, sign(purpose, payload, Settings(secret_keys=OLD_KEY)))
