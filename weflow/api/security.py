"""Who is calling: the bearer API key names a user, and every request acts in that user's organization."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from weflow import accounts
from weflow.workflows import Catalog, Scope

bearer = HTTPBearer(auto_error=False, description="an API key made by `weflow keys create ORG USER`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def catalog_of(request: Request) -> Catalog:
    """The catalog the app was built over (opaque here: only services call it)."""
    return cast(Catalog, request.app.state.catalog)


def caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Scope:
    """The scope of the key's user; 401 without a valid key."""
    if credentials is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    found = accounts.authenticate(catalog_of(request), credentials.credentials)
    if found is None:
        raise HTTPException(401, "unknown or revoked API key", headers=_CHALLENGE)
    return found


Caller = Annotated[Scope, Depends(caller)]
CatalogDep = Annotated[Catalog, Depends(catalog_of)]
