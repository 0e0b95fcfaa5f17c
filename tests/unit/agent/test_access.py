"""API keys: the keys file, token buckets, authentication, reload, the loopback rule and `edge-agent keys`."""

import json
import os
import stat

import pytest

from edge_agent import access
from edge_agent.access import (
    OPEN_TENANT,
    AccessError,
    Authenticator,
    AuthError,
    Caller,
    TokenBucket,
    add_key,
    exceeds,
    list_keys,
    load_keys,
    refuse_open_listen,
    retry_after_seconds,
    revoke_key,
)
from edge_agent.cli import main

CLASSES = ("public", "internal", "restricted")


class FakeClock:
    """A test clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys_file(tmp_path):
    return tmp_path / "api-keys.json"


# --- token bucket ---


def test_bucket_allows_a_burst_then_says_how_long_to_wait():
    bucket = TokenBucket(rate_per_s=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [None, None, None]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)  # half a token came back


def test_bucket_refills_at_the_rate_and_never_beyond_the_burst():
    bucket = TokenBucket(rate_per_s=1.0, burst=2, now=0.0)
    assert bucket.take(0.0) is None and bucket.take(0.0) is None
    assert bucket.take(1.0) is None  # one token per second
    assert bucket.take(1.0) == pytest.approx(1.0)
    # An hour idle refills only up to the burst.
    assert [bucket.take(3600.0) for _ in range(3)] == [None, None, pytest.approx(1.0)]


def test_bucket_ignores_a_clock_stepping_back():
    bucket = TokenBucket(rate_per_s=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) is None
    assert bucket.take(5.0) == pytest.approx(1.0)


def test_retry_after_is_whole_seconds_at_least_one():
    assert [retry_after_seconds(w) for w in (0.01, 1.0, 1.2, 3.9)] == [1, 1, 2, 4]


# --- the keys file ---


def test_add_key_writes_a_0600_file_without_the_secret(keys_file):
    secret, key = add_key(keys_file, "acme", "internal", 5, 7, CLASSES)
    assert secret.startswith("efk_") and len(secret) == 4 + 43
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    text = keys_file.read_text()
    assert secret not in text and secret[4:] not in text
    document = json.loads(text)
    assert document["version"] == 1
    assert document["keys"][0] == {
        "key_id": key.key_id,
        "tenant": "acme",
        "max_data_class": "internal",
        "rate_per_s": 5.0,
        "burst": 7,
        "created_at": key.created_at,
        "key_sha256": access.hash_secret(secret),
    }
    assert load_keys(keys_file, CLASSES) == {key.key_sha256: key}


def test_missing_file_holds_no_keys(keys_file):
    assert load_keys(keys_file, CLASSES) == {}
    assert list_keys(keys_file, CLASSES) == []


def test_list_in_order_added_and_revoke_removes_one(keys_file):
    _, first = add_key(keys_file, "a", "public", 1, 1, CLASSES)
    _, second = add_key(keys_file, "b", "restricted", 1, 1, CLASSES)
    assert [k.key_id for k in list_keys(keys_file, CLASSES)] == [first.key_id, second.key_id]
    assert revoke_key(keys_file, first.key_id) == first
    assert list_keys(keys_file, CLASSES) == [second]
    with pytest.raises(AccessError, match=f"no API key '{first.key_id}'"):
        revoke_key(keys_file, first.key_id)


@pytest.mark.parametrize(
    "tenant, max_class, rate, burst, problem",
    [
        ("", "public", 1, 1, "tenant"),
        ("a b", "public", 1, 1, "tenant"),
        ("x" * 65, "public", 1, 1, "tenant"),
        ("acme", "secret", 1, 1, "'secret' is not a data class"),
        ("acme", "public", 0, 1, "rate"),
        ("acme", "public", float("nan"), 1, "rate"),
        ("acme", "public", 1, 0, "burst"),
    ],
)
def test_add_key_refuses_bad_arguments(keys_file, tenant, max_class, rate, burst, problem):
    with pytest.raises(AccessError, match=problem):
        add_key(keys_file, tenant, max_class, rate, burst, CLASSES)
    assert not keys_file.exists()


def _entry(**changes):
    entry = {
        "key_id": "k_0123abcd",
        "tenant": "acme",
        "max_data_class": "public",
        "rate_per_s": 1.0,
        "burst": 2,
        "created_at": 1.0,
        "key_sha256": "ab" * 32,
    }
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"version": 2, "keys": []}), "version: expected 1, got 2"),
        (json.dumps({"version": 1, "keys": {}}), "keys: expected a list"),
        (json.dumps({"version": 1, "keys": ["x"]}), r"keys\[0\]: expected an object"),
        (json.dumps({"version": 1, "keys": [{"tenant": "a"}]}), r"keys\[0\]: missing key_id"),
        (json.dumps({"version": 1, "keys": [_entry(extra=1)]}), r"keys\[0\]: unknown extra"),
        (
            json.dumps({"version": 1, "keys": [_entry(), _entry(max_data_class="secret", key_id="k_00000000")]}),
            r"keys\[1\]\.max_data_class: 'secret' is not a data class",
        ),
        (json.dumps({"version": 1, "keys": [_entry(rate_per_s=-1)]}), r"keys\[0\]\.rate_per_s: expected a positive"),
        (json.dumps({"version": 1, "keys": [_entry(burst=1.5)]}), r"keys\[0\]\.burst"),
        (json.dumps({"version": 1, "keys": [_entry(tenant="")]}), r"keys\[0\]\.tenant"),
        (json.dumps({"version": 1, "keys": [_entry(key_sha256="secret")]}), r"keys\[0\]\.key_sha256"),
        (json.dumps({"version": 1, "keys": [_entry(), _entry()]}), r"keys\[1\]\.key_id: 'k_0123abcd' is used twice"),
    ],
)
def test_malformed_files_name_the_file_and_the_problem(keys_file, content, problem):
    keys_file.write_text(content)
    with pytest.raises(AccessError, match=problem) as info:
        load_keys(keys_file, CLASSES)
    assert str(keys_file) in str(info.value)


def test_keys_path_defaults_to_the_data_dir_and_follows_auth_keys_file(tmp_path):
    from edge_agent.config import parse_config

    assert access.keys_path(parse_config({"data_dir": str(tmp_path)})) == tmp_path / "api-keys.json"
    moved = parse_config({"data_dir": str(tmp_path), "auth": {"keys_file": "/etc/edgefleet/keys.json"}})
    assert str(access.keys_path(moved)) == "/etc/edgefleet/keys.json"


# --- authentication ---


def test_open_mode_accepts_anything_as_the_default_tenant_with_the_top_class(keys_file):
    auth = Authenticator(keys_file, CLASSES, clock=FakeClock())
    assert auth.open
    expected = Caller(OPEN_TENANT, "", "restricted")
    assert auth.authenticate(None) == expected
    assert auth.authenticate("Bearer sk-no-key-required") == expected
    assert all(auth.check_rate(expected) is None for _ in range(1000))


def test_a_valid_key_gives_its_tenant_and_class(keys_file):
    secret, key = add_key(keys_file, "acme", "internal", 1, 1, CLASSES)
    auth = Authenticator(keys_file, CLASSES, clock=FakeClock())
    assert not auth.open
    assert auth.authenticate(f"Bearer {secret}") == Caller("acme", key.key_id, "internal")
    assert auth.authenticate(f"bearer  {secret} ") == Caller("acme", key.key_id, "internal")


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer efk_unknown", "invalid_api_key"),
    ],
)
def test_requests_without_a_valid_key_are_401(keys_file, header, code):
    add_key(keys_file, "acme", "internal", 1, 1, CLASSES)
    auth = Authenticator(keys_file, CLASSES, clock=FakeClock())
    with pytest.raises(AuthError) as info:
        auth.authenticate(header)
    assert (info.value.status, info.value.code) == (401, code)


def test_a_leaked_hash_is_not_a_key(keys_file):
    _, key = add_key(keys_file, "acme", "internal", 1, 1, CLASSES)
    auth = Authenticator(keys_file, CLASSES, clock=FakeClock())
    with pytest.raises(AuthError):
        auth.authenticate(f"Bearer {key.key_sha256}")


def test_rate_is_limited_per_key(keys_file):
    clock = FakeClock()
    secret_a, _ = add_key(keys_file, "a", "public", 2, 2, CLASSES)
    secret_b, _ = add_key(keys_file, "b", "public", 2, 2, CLASSES)
    auth = Authenticator(keys_file, CLASSES, clock=clock)
    a, b = auth.authenticate(f"Bearer {secret_a}"), auth.authenticate(f"Bearer {secret_b}")
    assert [auth.check_rate(a) for _ in range(2)] == [None, None]
    assert auth.check_rate(a) == pytest.approx(0.5)
    assert auth.check_rate(b) is None  # b has its own bucket
    clock.now += 0.5
    assert auth.check_rate(a) is None


# --- reload ---


def test_a_key_added_after_start_is_accepted_after_the_next_look(keys_file):
    clock = FakeClock()
    auth = Authenticator(keys_file, CLASSES, clock=clock)
    _, first = add_key(keys_file, "first", "public", 1, 1, CLASSES)
    secret, key = add_key(keys_file, "acme", "public", 1, 1, CLASSES)
    # Open until the file is looked at again, at most once a second.
    assert auth.authenticate(f"Bearer {secret}").key_id == ""
    clock.now += 1.0
    assert not auth.open
    assert auth.authenticate(f"Bearer {secret}") == Caller("acme", key.key_id, "public")
    # keys() is the Authenticator's list of keys, not a dict's view.
    listed = auth.keys()
    assert {k.key_id for k in listed} == {first.key_id, key.key_id}


def test_a_revoked_key_is_refused_and_revoking_the_last_does_not_open_the_agent(keys_file):
    clock = FakeClock()
    secret, key = add_key(keys_file, "acme", "public", 1, 1, CLASSES)
    auth = Authenticator(keys_file, CLASSES, clock=clock)
    assert auth.authenticate(f"Bearer {secret}").key_id == key.key_id
    revoke_key(keys_file, key.key_id)
    clock.now += 1.5
    with pytest.raises(AuthError, match="Incorrect API key"):
        auth.authenticate(f"Bearer {secret}")
    assert not auth.open
    with pytest.raises(AuthError):
        auth.authenticate(None)


def test_a_corrupted_file_keeps_the_previous_keys(keys_file, caplog):
    clock = FakeClock()
    secret, key = add_key(keys_file, "acme", "public", 1, 1, CLASSES)
    auth = Authenticator(keys_file, CLASSES, clock=clock)
    keys_file.write_text("{oops")
    clock.now += 2
    assert auth.authenticate(f"Bearer {secret}").key_id == key.key_id
    assert "not valid JSON" in auth.error
    assert "keeping the 1 API keys" in caplog.text
    with pytest.raises(AuthError):
        auth.authenticate("Bearer efk_other")
    # Rewritten whole: the error clears and the file's keys, only, are in force.
    keys_file.unlink()
    new_secret, new_key = add_key(keys_file, "acme", "public", 1, 1, CLASSES)
    clock.now += 2
    assert auth.authenticate(f"Bearer {new_secret}").key_id == new_key.key_id
    assert auth.error is None
    with pytest.raises(AuthError):
        auth.authenticate(f"Bearer {secret}")


def test_a_bad_file_at_start_is_an_error(keys_file):
    keys_file.write_text(json.dumps({"version": 1, "keys": [_entry(max_data_class="secret")]}))
    with pytest.raises(AccessError, match="'secret' is not a data class"):
        Authenticator(keys_file, CLASSES)


# --- data classes and the loopback rule ---


def test_exceeds_follows_the_class_order():
    assert exceeds("restricted", "internal", CLASSES)
    assert not exceeds("internal", "internal", CLASSES)
    assert not exceeds("public", "restricted", CLASSES)
    with pytest.raises(AccessError, match="'secret' is not a data class"):
        exceeds("secret", "public", CLASSES)


@pytest.mark.parametrize(
    "host, refused",
    [
        ("0.0.0.0", True),
        ("::", True),
        ("10.0.0.5", True),
        ("box.example", True),
        ("127.0.0.1", False),
        ("127.1.2.3", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
    ],
)
def test_open_listen_is_refused_beyond_loopback(host, refused):
    reason = refuse_open_listen(host, keys_configured=False, allow_open=False)
    assert (reason is not None) == refused
    if refused:
        assert "beyond loopback" in reason and "edge-agent keys add --tenant NAME" in reason
        assert "auth.allow_open_non_loopback = true" in reason
    assert refuse_open_listen(host, keys_configured=True, allow_open=False) is None
    assert refuse_open_listen(host, keys_configured=False, allow_open=True) is None


def test_the_refusal_names_the_address():
    assert refuse_open_listen("0.0.0.0", False, False, port=8080).startswith("server.listen 0.0.0.0:8080 is beyond")
    assert refuse_open_listen("::", False, False, port=8080).startswith("server.listen [::]:8080 is beyond")


# --- edge-agent keys ---


def test_cli_add_prints_a_secret_that_authenticates(tmp_path, capsys):
    assert main(["keys", "add", "--tenant", "acme", "--max-class", "internal", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    secret = next(word for word in out.split() if word.startswith("efk_"))
    assert "shown only now" in out and f"Authorization: Bearer {secret}" in out and "OPENAI_API_KEY" in out
    caller = Authenticator(tmp_path / "api-keys.json", CLASSES).authenticate(f"Bearer {secret}")
    assert (caller.tenant, caller.max_data_class) == ("acme", "internal")


def test_cli_add_json_defaults_to_the_most_sensitive_class_of_the_config(tmp_path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(
        '[policy]\ndefault_class = "open"\n'
        '[[policy.classes]]\nname = "open"\n[[policy.classes]]\nname = "secret"\n'
        '[policy.detectors]\nemail = ""\nphone = ""\ncard = ""\niban = ""\nus_ssn = ""\n'
    )
    assert (
        main(
            [
                "keys",
                "add",
                "--tenant",
                "acme",
                "--rate",
                "3",
                "--burst",
                "4",
                "--json",
                "--config",
                str(config),
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    added = json.loads(capsys.readouterr().out)
    assert (added["max_data_class"], added["rate_per_s"], added["burst"]) == ("secret", 3.0, 4)
    assert "key_sha256" not in added
    assert (
        Authenticator(tmp_path / "api-keys.json", ["open", "secret"]).authenticate(f"Bearer {added['secret']}").key_id
        == added["key_id"]
    )


def test_cli_list_json_shows_no_hash_or_secret(tmp_path, capsys):
    secret, key = add_key(tmp_path / "api-keys.json", "acme", "public", 2, 3, CLASSES)
    assert main(["keys", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [
        {
            "key_id": key.key_id,
            "tenant": "acme",
            "max_data_class": "public",
            "rate_per_s": 2.0,
            "burst": 3,
            "created_at": key.created_at,
        }
    ]
    assert key.key_sha256 not in out and secret not in out
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["KEY", "ID", "TENANT"] and table[1].split()[:3] == [key.key_id, "acme", "public"]


def test_cli_revoke(tmp_path, capsys):
    _, key = add_key(tmp_path / "api-keys.json", "acme", "public", 2, 3, CLASSES)
    assert main(["keys", "revoke", key.key_id, "--data-dir", str(tmp_path)]) == 0
    assert f"revoked {key.key_id} (tenant acme)" in capsys.readouterr().out
    assert list_keys(tmp_path / "api-keys.json", CLASSES) == []
    assert main(["keys", "revoke", key.key_id, "--data-dir", str(tmp_path)]) == 2
    assert f"no API key '{key.key_id}'" in capsys.readouterr().err


def test_cli_bad_class_exits_2_and_writes_nothing(tmp_path, capsys):
    assert main(["keys", "add", "--tenant", "acme", "--max-class", "secret", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "'secret' is not a data class (policy.classes: public, internal, restricted)" in captured.err
    assert captured.out == "" and not (tmp_path / "api-keys.json").exists()
