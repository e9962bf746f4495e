"""Query parameters declared alike on several routes, of the agent and of the gateway."""

from __future__ import annotations

from fastapi import Query

from sandbox_agent.protocol import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT

#: ``page_id``: where a list goes on.
PageId = Query(None, description="Cursor from the previous page's next_page_id")
#: ``limit``: the most items of one page.
Limit = Query(DEFAULT_PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT, description="Items per page")
