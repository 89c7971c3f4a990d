"""The door of the page: the middleware every request goes through, login, logout, language.

The middleware looks the session up, sends anyone without one to the login page (or answers
401 to a non-page request), refuses every state-changing request without the right CSRF token
or from another origin (403), and adds the security headers. It guards the page's own routes
only: /metrics and /healthz (monitoring) and routes other parts add pass untouched.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import quote

from aiohttp import web

from gateway import accounts
from gateway.web import i18n
from gateway.web.auth import (
    PRE_TOKEN,
    SAFE_METHODS,
    SESSION,
    SESSION_S,
    Handler,
    client_address,
    cookie_name,
    csrf_ok,
    same_origin,
    set_cookie,
)
from gateway.web.site import LIVE_VERSION, WEB, render

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/login", "/lang"})
# Everything comes from the gateway itself: no inline script or style, no other origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    state = request.app[WEB]
    if request.match_info.route.resource not in state.resources:
        return await handler(request)  # not the page's: /metrics, /healthz, others' routes
    if path.startswith("/static/"):
        response = await handler(request)
        response.headers.update(HEADERS)
        # Links carry the assets' version, so a browser may keep them for a week.
        response.headers["Cache-Control"] = "public, max-age=604800"
        return response
    # before the page reads anything: a change after this point makes its stream refresh it
    request[LIVE_VERSION] = state.hub.version
    session = await state.sessions.lookup(request.cookies.get(cookie_name(request, "gw_session")))
    request[SESSION] = session
    new_pre = None
    if session is None:
        pre = request.cookies.get(cookie_name(request, "gw_pre"), "")
        if not 20 <= len(pre) <= 100:
            pre = new_pre = secrets.token_urlsafe(24)
        request[PRE_TOKEN] = pre
    try:
        if session is None and path not in PUBLIC_PATHS:
            if request.method in ("GET", "HEAD") and path != "/events":
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
            raise web.HTTPUnauthorized(text="log in first")
        if request.method not in SAFE_METHODS and not (
            same_origin(request) and await csrf_ok(request, session)
        ):
            if session is not None:  # a forged request riding a real session: worth a trace
                await state.audit.record(
                    session.username,
                    "csrf",
                    path,
                    address=client_address(request),
                    outcome="refused",
                )
            raise web.HTTPForbidden(text="missing or wrong CSRF token, or another origin")
        response = await handler(request)
    except web.HTTPException as exc:
        _finish(exc, request, new_pre)
        raise
    _finish(response, request, new_pre)
    return response


def _finish(response: web.StreamResponse, request: web.Request, new_pre: str | None) -> None:
    if response.prepared:  # an event stream: headers are already out
        return
    response.headers.update(HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    if new_pre is not None:
        set_cookie(response, request, "gw_pre", new_pre)


def safe_next(target: str) -> str:
    """Only a path of this site: never `//host`, `/\\host` or a scheme (open redirects)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")) and "\n" not in target:
        return target
    return "/"


async def login_page(request: web.Request) -> web.StreamResponse:
    if request.get(SESSION) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next", "/")))
    return await render(
        request,
        "login.html",
        title=i18n.translator(i18n.choose(request))("Log in"),
        error=None,
        username="",
        next_path=safe_next(request.query.get("next", "/")),
    )


async def login(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    _ = i18n.translator(i18n.choose(request))
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()[:64]
    password = str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))
    address = client_address(request)

    async def refuse(status: int, error: str, outcome: str) -> web.StreamResponse:
        await state.audit.record(username or "-", "login", address=address, outcome=outcome)
        response = await render(
            request,
            "login.html",
            status=status,
            title=_("Log in"),
            error=error,
            username=username,
            next_path=target,
        )
        return response

    wait = state.limiter.wait_s(address, username)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        response = await refuse(
            429, _("Too many failed attempts. Try again in {n} min.").format(n=minutes), "blocked"
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    account = await state.sessions.account(username) if username else None
    stored = account[1] if account else accounts.dummy_hash()
    async with state.limiter.checks:
        good = len(
            password
        ) <= accounts.MAX_PASSWORD and await asyncio.get_running_loop().run_in_executor(
            None, accounts.verify_password, password, stored
        )
    if account is None or not good:
        state.limiter.failed(address, username)
        return await refuse(401, _("Wrong user name or password."), "failed")
    state.limiter.succeeded(username)
    if accounts.needs_rehash(stored):
        await state.sessions.rehash(username, password)
    token, _session = await state.sessions.create(username)
    await state.audit.record(username, "login", address=address)
    response = web.HTTPSeeOther(target)
    set_cookie(response, request, "gw_session", token, max_age=SESSION_S)
    response.del_cookie(cookie_name(request, "gw_pre"), path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    state = request.app[WEB]
    session = request[SESSION]
    assert session is not None  # the guard let only sessions through
    await state.sessions.end(session)
    await state.audit.record(session.username, "logout", address=client_address(request))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(cookie_name(request, "gw_session"), path="/")
    raise response


async def choose_language(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    lang = str(form.get("lang", ""))
    response = web.HTTPSeeOther(safe_next(str(form.get("next", "/"))))
    if lang in i18n.CODES:  # a preference, not a credential: no __Host- prefix needed
        response.set_cookie(
            i18n.COOKIE,
            lang,
            max_age=365 * 86400,
            path="/",
            httponly=True,
            secure=request.secure,
            samesite="Strict",
        )
    raise response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_post("/lang", choose_language)
