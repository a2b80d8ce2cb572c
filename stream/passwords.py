"""Password hashes for ``server.users``: PBKDF2-HMAC-SHA256 from the standard library.

A hash carries its own parameters (``pbkdf2_sha256$<iterations>$<salt>$<digest>``, base64 without padding), so
raising the iteration count later leaves the hashes already in config files valid. ``sightline hash-password``
prints one; the service only ever verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

SCHEME = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's figure for PBKDF2-HMAC-SHA256 (2023)
MIN_ITERATIONS = 1_000  # below this a hash is refused: a typo, not a choice
HASH_PATTERN = rf"^{SCHEME}\$[0-9]{{4,9}}\$[A-Za-z0-9+/]{{16,}}\$[A-Za-z0-9+/]{{43}}$"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"iterations: at least {MIN_ITERATIONS}")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def hash_problem(encoded: str) -> str | None:
    """Why ``encoded`` is not a usable hash, or None."""
    if not re.fullmatch(HASH_PATTERN, encoded):
        return f"not a {SCHEME} hash (make one with `sightline hash-password`)"
    if int(encoded.split("$")[1]) < MIN_ITERATIONS:
        return f"fewer than {MIN_ITERATIONS} iterations"
    return None


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time in the digest; ``encoded`` was checked by ``hash_problem`` when the config was read."""
    _, iterations, salt, digest = encoded.split("$")
    computed = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), _unb64(salt), int(iterations))
    return hmac.compare_digest(computed, _unb64(digest))
