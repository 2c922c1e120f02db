"""What child processes see of the secrets, and what the output shows of them."""

from __future__ import annotations

import base64
import io
import json
import sys

import pytest

from cicd.errors import CommandError
from cicd.shell import SECRET_VARIABLES, Runner

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n"
)
KEY = json.dumps({"type": "service_account", "private_key": PEM}, indent=2)


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_children_get_no_registry_password_nor_forge_token(monkeypatch: pytest.MonkeyPatch):
    for name in SECRET_VARIABLES:
        monkeypatch.setenv(name, f"value-of-{name}")
    monkeypatch.setenv("SOME_ALIAS", "registered-secret-value")
    runner = Runner(out=io.StringIO())
    runner.add_secret("registered-secret-value")
    seen = runner.run(child("import os, json; print(json.dumps(dict(os.environ)))"), quiet=True)
    environment = json.loads(seen)
    assert not SECRET_VARIABLES & environment.keys()
    assert "SOME_ALIAS" not in environment  # holds a registered secret under another name
    assert "PATH" in environment
    assert {
        "CONTAINER_REGISTRY_PASSWORD",
        "GITHUB_TOKEN",
        "GITLAB_TOKEN",
        "REPO_TOKEN",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
    } <= SECRET_VARIABLES


def test_a_call_may_pass_a_secret_explicitly(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GITHUB_TOKEN", "inherited")
    runner = Runner(out=io.StringIO())
    code = "import os; print(os.environ.get('GITHUB_TOKEN'))"
    assert runner.run(child(code), env={"GITHUB_TOKEN": "given"}, quiet=True).strip() == "given"


def test_a_multi_line_key_printed_line_by_line_is_masked():
    runner = Runner(out=io.StringIO())
    runner.add_secret(KEY, username="_json_key")
    printed = "import sys; key = sys.stdin.read(); print(key); print(key.replace('\\n', ' | '))"
    with pytest.raises(CommandError) as error:
        runner.run(child(printed + "; raise SystemExit(1)"), stdin=KEY)
    shown = runner.out.getvalue() + str(error.value)
    for line in ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"):
        assert line not in shown


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_the_base64_form_of_a_secret_is_masked_wherever_it_sits(offset: int):
    secret = "s3cret-pass-word!"
    runner = Runner(out=io.StringIO())
    runner.add_secret(secret)
    encoded = base64.b64encode(b"x" * offset + secret.encode() + b"tail").decode()
    runner.echo(f"auth: {encoded}")
    # The characters of the stream that encode only the secret's bytes (whole 3-byte groups).
    inner = encoded[4 : 4 * ((offset + len(secret)) // 3)]
    assert len(inner) >= 12 and inner not in runner.out.getvalue()
    decoded = base64.b64decode(encoded)
    assert secret.encode() in decoded  # the test plants what it claims


def test_basic_auth_of_user_and_password_is_masked():
    runner = Runner(out=io.StringIO())
    runner.add_secret("pw", username="ci-bot")  # too short for base64 forms of its own
    pair = base64.b64encode(b"ci-bot:pw").decode()
    runner.echo(f'{{"auths": {{"127.0.0.1:5000": {{"auth": "{pair}"}}}}}}')
    assert pair not in runner.out.getvalue()


def test_the_json_escaped_form_of_a_key_is_masked():
    runner = Runner(out=io.StringIO())
    runner.add_secret(KEY)
    runner.echo(json.dumps({"GOOGLE_SERVICE_ACCOUNT_KEY": KEY}))
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in runner.out.getvalue()


def test_a_secret_with_a_quote_is_masked_before_quoting():
    secret = "it's-a-s3cret"
    runner = Runner(out=io.StringIO(), dry=True)
    runner.add_secret(secret)
    runner.run(["docker", "login", "--password", secret])
    shown = runner.out.getvalue()
    assert "s-a-s3cret" not in shown and "it'" not in shown
    assert "docker login --password" in shown
