"""SecretBox (SPEC §8): secrets encrypted with SECRETS_KEY's first key, decrypted with any, refused when no
key made them; loaded from Settings, the dev key file standing in for SECRETS_KEY in dev mode only."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from export_core.secrets import MISSING_KEY, SecretBox, SecretsKeyMissing, UnreadableSecret
from export_core.settings import DEV_SECRETS_KEY_FILE, Settings

A, B, C = (Fernet.generate_key().decode() for _ in range(3))
SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LW9mLWEtd2ViaG9vaw=="


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Neither SECRETS_KEY nor DEV_MODE set; DATA_DIR a scratch folder."""
    for name in ("SECRETS_KEY", "DEV_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return monkeypatch


def box_of(secrets_key: str) -> SecretBox:
    return SecretBox.from_settings(Settings(SECRETS_KEY=secrets_key))  # type: ignore[call-arg]


def test_a_secret_is_stored_as_a_token_that_only_the_key_reads():
    box = box_of(A)
    token = box.encrypt(SECRET)
    assert SECRET not in token and SECRET.removeprefix("whsec_") not in token
    assert box.decrypt(token) == SECRET and box.encrypt(SECRET) != token, "a new token each time"
    assert box.decrypt(box.encrypt("Tournée d'été")) == "Tournée d'été"
    for other in (box_of(B), box_of(C)):
        with pytest.raises(UnreadableSecret) as refused:
            other.decrypt(token)
        assert str(refused.value) == "The stored secret cannot be decrypted with any key of SECRETS_KEY."
    changed = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    for unreadable in (changed, "not-a-token", "ünïcode"):
        with pytest.raises(UnreadableSecret):
            box.decrypt(unreadable)
    assert repr(box) == "SecretBox(1 key(s))" and A not in repr(box)


def test_rotation_the_old_key_still_decrypts_and_the_new_one_encrypts():
    made_with_a = box_of(A).encrypt(SECRET)
    rotated = box_of(f"{B}, {A}")
    assert rotated.decrypt(made_with_a) == SECRET
    made_now = rotated.encrypt(SECRET)
    assert Fernet(B.encode()).decrypt(made_now.encode()).decode() == SECRET, "the first key encrypts"
    with pytest.raises(UnreadableSecret):
        box_of(A).decrypt(made_now)
    assert rotated.rotated(made_now) is None, "made with the first key already: nothing to do"
    again = rotated.rotated(made_with_a)
    assert again is not None and box_of(B).decrypt(again) == SECRET, "made anew with B: A may go"
    with pytest.raises(UnreadableSecret):
        rotated.rotated(box_of(C).encrypt(SECRET))


def test_outside_dev_mode_there_is_no_box_without_secrets_key(clean: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / DEV_SECRETS_KEY_FILE).write_text(A)  # a dev key sits in DATA_DIR: not outside dev mode
    settings = Settings.from_env()
    assert settings.secrets_key is None
    with pytest.raises(SecretsKeyMissing) as missing:
        SecretBox.from_settings(settings)
    assert str(missing.value) == MISSING_KEY and "SECRETS_KEY" in MISSING_KEY


def test_in_dev_mode_a_key_is_generated_into_data_dir_once_and_private(clean: pytest.MonkeyPatch, tmp_path: Path):
    clean.setenv("DEV_MODE", "1")
    path = tmp_path / "keys" / DEV_SECRETS_KEY_FILE
    generated = Settings.from_env().secrets_key
    assert generated is not None and path.read_text().strip() == generated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings.from_env().secrets_key == generated, "the same key on the next start"
    token = SecretBox.from_settings(Settings.from_env()).encrypt(SECRET)
    assert box_of(generated).decrypt(token) == SECRET
    assert sorted(p.name for p in path.parent.iterdir()) == [DEV_SECRETS_KEY_FILE], "no draft left behind"
    clean.setenv("SECRETS_KEY", B)
    assert Settings.from_env().secrets_key == B, "SECRETS_KEY wins over the dev key"


def test_processes_starting_at_once_in_dev_mode_agree_on_one_key(clean: pytest.MonkeyPatch, tmp_path: Path):
    clean.setenv("DEV_MODE", "1")
    keys: list[str | None] = []
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        keys.append(Settings.from_env().secrets_key)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1 and keys[0] is not None
    assert (tmp_path / "keys" / DEV_SECRETS_KEY_FILE).read_text().strip() == keys[0]


def test_an_unwritable_data_dir_in_dev_mode_is_a_plain_error(clean: pytest.MonkeyPatch, tmp_path: Path):
    if os.geteuid() == 0:
        clean.setenv("DATA_DIR", str(tmp_path / "a-file"))
        (tmp_path / "a-file").write_text("not a folder")  # root may write anywhere: a file in the way instead
    else:
        tmp_path.chmod(0o500)
    clean.setenv("DEV_MODE", "1")
    with pytest.raises(ValueError, match=r"SECRETS_KEY is not set and the dev key .* could not be made"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("value", "which"),
    [("not-a-key", "key 1 of 1"), (f"{A},", "key 2 of 2"), (f"{A},{A[:-2]}", "key 2 of 2"), (" , ", "key 1 of 2")],
)
def test_a_malformed_secrets_key_is_refused_naming_the_variable_never_the_value(
    clean: pytest.MonkeyPatch, value: str, which: str
):
    clean.setenv("SECRETS_KEY", value)
    with pytest.raises(ValueError) as refused:
        Settings.from_env()
    message = str(refused.value)
    assert message.startswith(f"SECRETS_KEY: {which} is not a Fernet key") and "Fernet.generate_key()" in message
    assert A not in message and "not-a-key" not in message


def test_the_key_never_reaches_repr(clean: pytest.MonkeyPatch):
    clean.setenv("SECRETS_KEY", f"{A},{B}")
    settings = Settings.from_env()
    assert settings.secrets_key == f"{A},{B}"
    assert A not in repr(settings) and B not in repr(settings)
