"""The destination tests' real servers: sshd (tests/sftp_server.py) and gpg keys (tests/pgp_keys.py)."""

from tests.pgp_keys import pgp_key_pair_fixture  # noqa: F401 (the fixture)
from tests.sftp_server import sftp_account_fixture, sftp_server_fixture  # noqa: F401 (the fixtures)
