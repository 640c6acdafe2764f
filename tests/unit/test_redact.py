"""No credential in output: passwords in URLs, libpq keywords and query parameters are masked,
also under longer names such as a rediss:// URL's `ssl_password`."""

from __future__ import annotations

import pytest

from dee.redact import redact


@pytest.mark.parametrize(("given", "shown"), [
    ("postgresql://dee:s3cret@db:5432/dee", "postgresql://dee:***@db:5432/dee"),
    ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://u:pw@h:6380/0?ssl_ca_certs=/ca.pem&ssl_password=s3cret", "rediss://u:***@h:6380/0?ssl_ca_certs=/ca.pem&ssl_password=***"),
    ("host=db password=s3cret dbname=dee", "host=db password=*** dbname=dee"),
    ("https://api.example/x?client_secret=s3cret&auth_token=t0k", "https://api.example/x?client_secret=***&auth_token=***"),
    ("redis://redis:6379/0?ssl_ca_certs=/ca.pem", "redis://redis:6379/0?ssl_ca_certs=/ca.pem"),
])  # fmt: skip
def test_credentials_are_masked_and_the_rest_is_kept(given: str, shown: str) -> None:
    assert redact(given) == shown
    assert "s3cret" not in redact(given)
