"""Every route of /api/ in one table, and the router built from it.

Each endpoint module ends in its own `ROUTES`; this joins them. To find the handler of
`POST /api/cache/sync`, grep for `"/cache/sync"` in `balupi/api/`.
"""

from __future__ import annotations

from balupi.api import JsonApi, Route
from balupi.api import auth, cache, energy, nas, plugins, system, tapo
from balupi.api.context import ApiContext

ROUTES: tuple[Route, ...] = (
    *auth.ROUTES,
    *system.ROUTES,
    *nas.ROUTES,
    *energy.ROUTES,
    *tapo.ROUTES,
    *cache.ROUTES,
    *plugins.ROUTES,
)


def build_api(ctx: ApiContext) -> JsonApi:
    """The /api/ sub-app over `ctx`; authentication runs before every handler."""
    api = JsonApi(ROUTES, ctx)
    api.before_request.insert(0, auth.authenticate)
    return api
