"""The field staff web page, served by the gateway process on its HTTP port.

gateway/http.py calls `setup(app)` when this package is present. Modules:
  site     the page's state on the app, rendering, start/stop hooks, following the agent
  gate     the security middleware, login, logout, language choice
  auth     sessions, CSRF, login rate limit, audit log
  pages    the pages (GET) and the live event stream
  actions  operator actions (downlinks) and alarm acknowledgement (POST)
  model    node health, overview figures, gateway facts (secrets left out)
  alarms   alarm episodes derived from the stored readings
  charts   server-rendered SVG
  i18n     English, French, Dutch (catalog: the translations)
  live     live updates (SSE) and the recent log lines
Templates and static assets ship in this package: the page needs nothing from the internet.
"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    from gateway.web.site import setup as setup_site  # noqa: PLC0415 -- keeps imports lazy

    setup_site(app)
