"""Who is calling: the bearer API key names a user, and every request acts in that user's organization."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from weflow.catalog import Catalog, auth
from weflow.workflows import Scope

bearer = HTTPBearer(auto_error=False, description="an API key made by `weflow keys create ORG USER`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def catalog_of(request: Request) -> Catalog:
    """The catalog the app was built over."""
    return cast(Catalog, request.app.state.catalog)


def caller(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Scope:
    """The scope of the key's user; 401 without a valid key."""
    if credentials is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    catalog = catalog_of(request)
    user = auth.authenticate(catalog, credentials.credentials)
    if user is None:
        raise HTTPException(401, "unknown or revoked API key", headers=_CHALLENGE)
    return Scope(catalog, user)


Caller = Annotated[Scope, Depends(caller)]
CatalogDep = Annotated[Catalog, Depends(catalog_of)]
