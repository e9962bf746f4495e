"""Query parameters declared alike on several routes, of the agent and of the gateway
(whose FastAPI routes take them from :mod:`sandbox_agent.routes.documented`)."""

from __future__ import annotations

from sandbox_agent.protocol import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT
from sandbox_agent.routes.decl import Query

#: ``page_id``: where a list goes on.
PageId = Query(None, description="Cursor from the previous page's next_page_id")
#: ``limit``: the most items of one page.
Limit = Query(DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT, description="Items per page")
