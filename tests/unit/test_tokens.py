"""Link tokens (dee.kernel.tokens): signed, verified with the key alone, refused when forged,
altered, expired, for another URL or under a retired key; signatures kept out of content hashes."""

from __future__ import annotations

import pytest

from dee.kernel import tokens

KEY, OLD = b"k" * 32, b"o" * 32


def test_a_token_reads_back_with_its_key() -> None:
    token = tokens.make(KEY, "c", "run-1", "mail", "c-1", 100, "https://example.com/p?a=1")
    got = tokens.read(token, (KEY,), now_tick=100, url="https://example.com/p?a=1")
    assert (got.kind, got.run_id, got.step_id, got.contact_id, got.expires_tick) == ("c", "run-1", "mail", "c-1", 100)
    assert tokens.make(KEY, "c", "run-1", "mail", "c-1", 100, "https://example.com/p?a=1") == token  # deterministic
    assert tokens.read(token, (OLD, KEY), now_tick=0, url="https://example.com/p?a=1")  # a previous key may be listed too


@pytest.mark.parametrize("change", ["forged", "altered", "expired", "other url", "retired key", "unsigned", "garbage"])
def test_what_is_not_this_deployments_token_is_refused(change: str) -> None:
    url = "https://example.com/p"
    token = tokens.make(KEY, "c", "run-1", "mail", "c-1", 100, url)
    keys, now, target = (KEY,), 50, url
    if change == "forged":
        token = tokens.make(b"x" * 32, "c", "run-1", "mail", "c-1", 100, url)
    elif change == "altered":
        _body, sig = token.split("~")
        token = tokens.make(KEY, "c", "run-2", "mail", "c-1", 100, url).split("~")[0] + "~" + sig
    elif change == "expired":
        now = 101
    elif change == "other url":
        target = "https://evil.example/phish"
    elif change == "retired key":
        keys = (OLD,)
    elif change == "unsigned":
        token = tokens.make(b"", "c", "run-1", "mail", "c-1", 100, url)
    else:
        token = "not-a-token~" + "A" * 22
    with pytest.raises(tokens.TokenError):
        tokens.read(token, keys, now, target)


def test_signatures_are_kept_out_of_what_a_content_hash_covers() -> None:
    one = tokens.make(KEY, "o", "run-1", "mail", "c-1", 100)
    two = tokens.make(OLD, "o", "run-1", "mail", "c-1", 100)
    assert one != two and tokens.strip_signatures(f"<img src=/o/{one}>") == tokens.strip_signatures(f"<img src=/o/{two}>")
