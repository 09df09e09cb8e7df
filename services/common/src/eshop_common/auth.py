"""Bearer-token identity: HS256 JWTs whose `sub` is the user id and whose `role` may be `admin`."""

from __future__ import annotations

import argparse
import hmac
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from cachetools import LRUCache
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from eshop_common.problems import Forbidden, Unauthorized
from eshop_common.settings import DEMO_JWT_SECRET

ALGORITHM = "HS256"
ISSUER = "eshop-demo"
ADMIN_ROLE = "admin"
SUBJECT_MAX = 128
ROLE_MAX = 64
ROLES_MAX = 16


@dataclass(frozen=True)
class User:
    id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


# RFC 7519 §2: a NumericDate is a JSON number of seconds (fractions allowed); never a string,
# a boolean or null, which PyJWT's own checks would coerce or let through.
NumericDate = StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)]
Subject = Annotated[StrictStr, StringConstraints(min_length=1, max_length=SUBJECT_MAX)]
Role = Annotated[StrictStr, StringConstraints(max_length=ROLE_MAX)]


class Claims(BaseModel):
    """The claims this sample reads, with the types RFC 7519 §4.1 gives them. A token whose claims
    have other types is refused as a whole (RFC 8725 §3.11: validate every claim you use)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sub: Subject
    iss: StrictStr
    exp: NumericDate
    iat: NumericDate | None = None
    nbf: NumericDate | None = None
    role: Role | Annotated[list[Role], Field(max_length=ROLES_MAX)] = Field(default_factory=list)

    @field_validator("sub")
    @classmethod
    def _usable_subject(cls, sub: str) -> str:
        if not sub.strip() or "\x00" in sub:
            raise ValueError("not a usable user id")
        return sub

    @property
    def roles(self) -> frozenset[str]:
        return frozenset([self.role] if isinstance(self.role, str) else self.role)


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A token that passed the full check: its user, and the window of times in which PyJWT
    accepts it, in PyJWT's own terms (`int()` of each claim; `_validate_exp`, `_validate_nbf`,
    `_validate_iat` in jwt/api_jwt.py): valid while `not_before <= now + leeway` (the later of
    `nbf` and `iat`, when either is given) and `now - leeway < expires`."""

    user: User
    not_before: int | None
    expires: int

    def holds(self, now: float, leeway: float) -> bool:
        if self.not_before is not None and self.not_before > now + leeway:
            return False
        return self.expires > now - leeway


class TokenVerifier:
    """Verifies bearer tokens, and remembers the last `VERIFIED_KEPT` it accepted until they
    expire: a client sends the same token with every request, and checking it again costs more
    CPU than the rest of a basket read's routing."""

    VERIFIED_KEPT = 1024
    # Longer tokens are verified every time: a bound on the memory the cache can hold.
    CACHED_TOKEN_MAX = 2048

    def __init__(self, secret: str, *, leeway_seconds: int = 5) -> None:
        self._secret = secret
        self._leeway = leeway_seconds
        # Keyed by the exact token: any other bytes, a changed claim or signature included,
        # miss and are verified in full.
        self._verified: LRUCache[str, _Accepted] = LRUCache(self.VERIFIED_KEPT)
        self._lock = threading.Lock()  # LRUCache is not thread-safe; sync routes run on threads

    def verify(self, token: str) -> User:
        """The user a bearer token names.

        PyJWT checks the signature and algorithm (RFC 8725 §3.1), the presence of `sub`, `exp` and
        `iss`, the issuer and the times (RFC 7519 §4.1.1, §4.1.4, §4.1.5); `Claims` then checks
        that every claim the sample reads has its RFC 7519 type. Raises `Unauthorized` (401) for
        any token that fails either, whatever its claims hold.

        A token accepted before is accepted again without those checks while the time is inside
        the window PyJWT accepted it in (`_Accepted`): its signature and claims cannot have
        changed, only the clock. Outside the window (expired, or a clock set back before `nbf`)
        it is checked in full again, and refused with PyJWT's own reason.
        """
        with self._lock:
            known = self._verified.get(token)
        if known is not None and known.holds(time.time(), self._leeway):
            return known.user
        accepted = self._check(token)
        if len(token) <= self.CACHED_TOKEN_MAX:
            with self._lock:
                self._verified[token] = accepted
        return accepted.user

    def _check(self, token: str) -> _Accepted:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["sub", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The bearer token has expired.") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"The bearer token is not valid: {str(exc).rstrip('.')}.") from None
        try:
            claims = Claims.model_validate(payload)
        except ValidationError as exc:
            names = sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]})
            raise Unauthorized(
                f"The bearer token's claims have the wrong type or size: {', '.join(names)}."
            ) from None
        starts = [int(t) for t in (claims.nbf, claims.iat) if t is not None]
        return _Accepted(
            User(id=claims.sub, roles=claims.roles),
            not_before=max(starts) if starts else None,
            expires=int(claims.exp),  # an int: any size compares exactly with a float `now`
        )


def mint_token(
    secret: str, user_id: str, *, admin: bool = False, ttl: timedelta = timedelta(hours=8)
) -> str:
    """A demo token. The sample has no identity provider; this stands in for one."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {"sub": user_id, "iss": ISSUER, "iat": now, "exp": now + ttl}
    if admin:
        claims["role"] = ADMIN_ROLE
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


_bearer = HTTPBearer(auto_error=False, description="A JWT minted with `uv run mint-token <user>`")


# Dependencies here are `async def` on purpose: FastAPI runs a plain `def` dependency on a worker
# thread, and the hop costs more than an HS256 check does.


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise Unauthorized("A bearer token is required.")
    verifier: TokenVerifier = request.app.state.token_verifier
    return verifier.verify(credentials.credentials)


CurrentUser = Annotated[User, Depends(current_user)]


async def require_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("This operation needs the admin role.")
    return user


AdminUser = Annotated[User, Depends(require_admin)]


async def require_sidecar(
    request: Request,
    token: Annotated[str | None, Header(alias="dapr-api-token", include_in_schema=False)] = None,
) -> None:
    """Only the app's own sidecar may call this route (it sends APP_API_TOKEN)."""
    expected: SecretStr | None = request.app.state.app_api_token
    if expected is None:
        return
    if token is None or not hmac.compare_digest(token, expected.get_secret_value()):
        raise Unauthorized("Only the Dapr sidecar may call this endpoint.")


FromSidecar = Depends(require_sidecar)


def mint_token_cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mint-token", description="Print a demo bearer token for a user of the sample."
    )
    parser.add_argument("user", help="the user id that becomes the token's `sub`, e.g. alice")
    parser.add_argument("--admin", action="store_true", help="add the admin role")
    parser.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    args = parser.parse_args(argv)
    secret = os.environ.get("JWT_SECRET", DEMO_JWT_SECRET)
    print(mint_token(secret, args.user, admin=args.admin, ttl=timedelta(seconds=args.ttl)))
