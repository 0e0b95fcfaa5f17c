"""Where `edge-agent enroll` takes the bootstrap token from, and what it warns about."""

import io

import pytest

from edge_agent.cli import TOKEN_ENV, TokenSourceError, bootstrap_token


def _file(tmp_path, text="abc.secret\n", mode=0o600):
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_an_owner_only_token_file_is_read_quietly(tmp_path):
    assert bootstrap_token(None, _file(tmp_path), {}) == ("abc.secret", [])


def test_the_environment_is_read_quietly():
    assert bootstrap_token(None, None, {TOKEN_ENV: " abc.secret\n"}) == ("abc.secret", [])


def test_stdin_with_a_dash():
    assert bootstrap_token(None, "-", {}, stdin=io.StringIO("abc.secret\nmore\n")) == ("abc.secret", [])


def test_the_argv_form_works_and_warns_naming_both_alternatives():
    token, warnings = bootstrap_token("abc.secret", None, {TOKEN_ENV: "other"})
    assert token == "abc.secret"
    (warning,) = warnings
    assert "`ps`" in warning and "shell" in warning and "--token-file" in warning and f"${TOKEN_ENV}" in warning


@pytest.mark.parametrize("mode, who", [(0o644, "group and others"), (0o640, "its group"), (0o604, "group and others")])
def test_a_token_file_others_may_read_is_taken_with_a_warning(tmp_path, mode, who):
    path = _file(tmp_path, mode=mode)
    token, (warning,) = bootstrap_token(None, path, {})
    assert token == "abc.secret"
    assert f"readable by {who} (mode {mode:04o})" in warning and f"chmod 600 {path}" in warning


@pytest.mark.parametrize(
    "flag, file_text, environ, message",
    [
        (None, None, {}, f"no bootstrap token: set ${TOKEN_ENV}, or give --token-file FILE"),
        (None, None, {TOKEN_ENV: ""}, "no bootstrap token"),
        ("x", "abc", {}, "--token-file or --token, not both"),
        (None, "  \n", {}, "holds no token"),
        ("  ", None, {}, "--token holds no token"),
        (None, None, {TOKEN_ENV: " "}, f"${TOKEN_ENV} holds no token"),
    ],
)
def test_no_usable_token_is_a_clear_error(tmp_path, flag, file_text, environ, message):
    path = None if file_text is None else _file(tmp_path, file_text)
    with pytest.raises(TokenSourceError, match=message.replace("$", r"\$")):
        bootstrap_token(flag, path, environ)


def test_a_missing_token_file_names_it(tmp_path):
    with pytest.raises(TokenSourceError, match=r"--token-file .*nope: No such file"):
        bootstrap_token(None, str(tmp_path / "nope"), {})
