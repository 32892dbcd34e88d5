"""The dashboard at ``/ui``: login and logout, jobs, a job's timeline, deliveries
(dead letters with Retry) and sinks. Server-rendered; every page reloads itself.

Pages need an authenticated session (``receiver.ui.session``); without one a GET is
redirected to ``/ui/login`` and a POST refused. Every POST carries the session's CSRF
token in a ``csrf`` form field.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.errors import BadRequest
from receiver.events import DeliveryState, JobStatus, utcnow
from receiver.routes.common import read_body, settings_of, store_of
from receiver.routes.deliveries import sink_views
from receiver.store import DeliveryFilter
from receiver.ui import views
from receiver.ui.session import SESSION_COOKIE, UiSession, UiSessions

if TYPE_CHECKING:
    import jinja2

FORM_LIMIT_BYTES = 16 * 1024
REFRESH_S = 5  # pages reload themselves this often
REFRESH_BUSY_S = 2  # … or this often while something on them is still moving
REFRESH_IDLE_S = 15


@functools.cache
def _templates() -> jinja2.Environment:
    """The dashboard's templates, loaded with the first page (jinja2 costs a cold start
    that never shows a page ~30 ms)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("receiver.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


Form = dict[str, str]
Page = Callable[[Request, UiSession, Form], Awaitable[Response]]


def sessions_of(request: Request) -> UiSessions:
    """The app's ``UiSessions``, made on first use from the relay's settings."""
    sessions: UiSessions | None = getattr(request.app.state, "ui_sessions", None)
    if sessions is None:
        settings = settings_of(request)
        sessions = UiSessions(
            settings.secret_keys,
            settings.api_token,
            secure=settings.public_url.startswith("https://"),
        )
        request.app.state.ui_sessions = sessions
    return sessions


def _session(request: Request) -> UiSession | None:
    return sessions_of(request).load(request.cookies.get(SESSION_COOKIE))


def safe_next(target: str | None, default: str = "/ui/jobs") -> str:
    """``target`` if it is a dashboard path on this site, else ``default`` (no open
    redirects: no scheme, no host, no ``//`` or backslash tricks)."""
    if not target or not target.isprintable() or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return default
    if parts.path != "/ui" and not parts.path.startswith("/ui/"):
        return default
    return target


def render(
    request: Request,
    session: UiSession,
    template: str,
    *,
    status_code: int = 200,
    refresh_s: int | None = REFRESH_S,
    **context: Any,
) -> HTMLResponse:
    """A page with the session's CSRF token, a self-refresh and strict headers."""
    nonce = secrets.token_urlsafe(12)
    html = (
        _templates()
        .get_template(template)
        .render(
            request_path=request.url.path,
            csrf=sessions_of(request).csrf_token(session),
            authenticated=session.authenticated,
            nonce=nonce,
            refresh_s=refresh_s,
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers.update(
        {
            "cache-control": "no-store",
            "x-frame-options": "DENY",
            "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin",
            "content-security-policy": (
                "default-src 'none'; style-src 'self'; img-src 'self' http: https: data:;"
                f" script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none';"
                " base-uri 'none'"
            ),
        }
    )
    return response


async def read_form(request: Request) -> Form:
    """An urlencoded form body (bounded), first value of each field."""
    body = await read_body(request, FORM_LIMIT_BYTES)
    try:
        pairs = parse_qsl(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20
        )
    except ValueError as exc:
        raise BadRequest("too many form fields") from exc
    form: Form = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def guarded(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """Run ``page`` for an authenticated session (and, on POST, a valid CSRF token)."""

    async def endpoint(request: Request) -> Response:
        session = _session(request)
        if session is None or not session.authenticated:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method != "GET":
                target = "/ui/jobs"
            return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)
        form: Form = {}
        if request.method == "POST":
            form = await read_form(request)
            if not sessions_of(request).check_csrf(session, form.get("csrf")):
                return render(
                    request,
                    session,
                    "error.html",
                    status_code=403,
                    refresh_s=None,
                    title="Forbidden",
                    message="The form's CSRF token is missing or stale: "
                    "reload the page and try again.",
                )
        return await page(request, session, form)

    return endpoint


async def login_page(request: Request) -> Response:
    session = _session(request)
    target = safe_next(request.query_params.get("next"))
    if session is not None and session.authenticated:
        return RedirectResponse(target, status_code=303)
    return _login_form(request, session, target)


def _login_form(
    request: Request, session: UiSession | None, target: str, error: str | None = None
) -> Response:
    fresh = session is None
    session = session or UiSessions.new(authenticated=False)
    response = render(
        request,
        session,
        "login.html",
        status_code=401 if error else 200,
        refresh_s=None,
        title="Sign in",
        next=target,
        error=error,
    )
    if fresh:
        sessions_of(request).attach(response, session)
    return response


async def login(request: Request) -> Response:
    """Check the ``token`` field against ``RELAY_API_TOKEN``; on success a new session."""
    sessions = sessions_of(request)
    session = _session(request)
    form = await read_form(request)
    target = safe_next(form.get("next"))
    if session is None or not sessions.check_csrf(session, form.get("csrf")):
        return _login_form(request, session, target, "The form expired: please sign in again.")
    if not sessions.check_api_token(form.get("token", "")):
        return _login_form(request, session, target, "That is not the API token.")
    response = RedirectResponse(target, status_code=303)
    sessions.attach(response, UiSessions.new(authenticated=True))
    return response


async def logout(request: Request, session: UiSession, form: Form) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    sessions_of(request).clear(response)
    return response


def _choice(text: str | None, enum: type[JobStatus] | type[DeliveryState]) -> Any:
    try:
        return enum(text) if text else None
    except ValueError:
        return None


async def jobs_page(request: Request, session: UiSession, form: Form) -> Response:
    params = request.query_params
    status = _choice(params.get("status"), JobStatus)
    provider = params.get("provider") or None
    ref = params.get("ref") or None
    rows = await views.job_rows(store_of(request), status=status, provider=provider, ref=ref)
    return render(
        request,
        session,
        "jobs.html",
        title="Jobs",
        jobs=rows,
        statuses=[s.value for s in JobStatus],
        providers=sorted(settings_of(request).providers),
        filters={
            "status": status.value if status else "",
            "provider": provider or "",
            "ref": ref or "",
        },
    )


async def job_page(request: Request, session: UiSession, form: Form) -> Response:
    store = store_of(request)
    job = await store.get_job(request.path_params["job_id"])
    if job is None:
        return _not_found(request, session, "No such job.")
    entries = await views.timeline(store, job)
    busy = views.in_flight(job, entries)
    return render(
        request,
        session,
        "job.html",
        title=f"Job {job.id}",
        job=job.view(),
        entries=entries,
        replayed=request.query_params.get("replayed"),
        refresh_s=REFRESH_BUSY_S if busy else REFRESH_IDLE_S,
    )


async def deliveries_page(request: Request, session: UiSession, form: Form) -> Response:
    params = request.query_params
    state = DeliveryState.DEAD if "state" not in params else _choice(params["state"], DeliveryState)
    sink = params.get("sink") or None
    rows = await views.delivery_rows(store_of(request), state=state, sink=sink)
    return render(
        request,
        session,
        "deliveries.html",
        title="Dead letters" if state is DeliveryState.DEAD else "Deliveries",
        deliveries=rows,
        states=[s.value for s in DeliveryState],
        sinks=sorted(settings_of(request).sinks),
        filters={"state": state.value if state else "", "sink": sink or ""},
        replayed=params.get("replayed"),
    )


async def delivery_page(request: Request, session: UiSession, form: Form) -> Response:
    store = store_of(request)
    delivery = await store.get_delivery(request.path_params["delivery_id"])
    if delivery is None:
        return _not_found(request, session, "No such delivery.")
    event = await store.get_event(delivery.event_id)
    pending = delivery.state is DeliveryState.PENDING
    row = views.delivery_row(delivery, event)
    row["attempt_list"] = [attempt.view() for attempt in await store.list_attempts(delivery.id)]
    return render(
        request,
        session,
        "delivery.html",
        title=f"Delivery {delivery.id}",
        delivery=row,
        event=event.as_dict() if event is not None else None,
        replayed=request.query_params.get("replayed"),
        refresh_s=REFRESH_BUSY_S if pending else REFRESH_IDLE_S,
    )


async def retry_one(request: Request, session: UiSession, form: Form) -> Response:
    delivery_id = request.path_params["delivery_id"]
    count = await store_of(request).replay(DeliveryFilter(delivery_id=delivery_id), utcnow())
    back = safe_next(form.get("back"), f"/ui/deliveries/{quote(delivery_id)}")
    return _after_replay(back, count)


async def retry_all(request: Request, session: UiSession, form: Form) -> Response:
    """Replay every dead delivery (of one sink, if the form names it)."""
    sink = form.get("sink") or None
    where = DeliveryFilter(state=DeliveryState.DEAD, sink=sink)
    count = await store_of(request).replay(where, utcnow())
    query = {"state": "dead", **({"sink": sink} if sink else {})}
    return _after_replay(f"/ui/deliveries?{urlencode(query)}", count)


def _after_replay(target: str, count: int) -> Response:
    parts = urlsplit(target)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "replayed"]
    query.append(("replayed", str(count)))
    return RedirectResponse(f"{parts.path}?{urlencode(query)}", status_code=303)


async def sinks_page(request: Request, session: UiSession, form: Form) -> Response:
    rows = await sink_views(request)
    dead = await views.dead_counts(store_of(request), [row["name"] for row in rows])
    return render(
        request,
        session,
        "sinks.html",
        title="Sinks",
        sinks=[{**row, "dead": dead.get(row["name"], 0)} for row in rows],
        dead_cap=views.DEAD_COUNT_CAP,
    )


def _not_found(request: Request, session: UiSession, message: str) -> Response:
    return render(
        request,
        session,
        "error.html",
        status_code=404,
        refresh_s=None,
        title="Not found",
        message=message,
    )


async def home(request: Request) -> Response:
    return RedirectResponse("/ui/jobs", status_code=303)


routes: list[BaseRoute] = [
    Route("/ui", home, methods=["GET"]),
    Route("/ui/login", login_page, methods=["GET"]),
    Route("/ui/login", login, methods=["POST"]),
    Route("/ui/logout", guarded(logout), methods=["POST"]),
    Route("/ui/jobs", guarded(jobs_page), methods=["GET"]),
    Route("/ui/jobs/{job_id}", guarded(job_page), methods=["GET"]),
    Route("/ui/deliveries", guarded(deliveries_page), methods=["GET"]),
    Route("/ui/deliveries/retry", guarded(retry_all), methods=["POST"]),
    Route("/ui/deliveries/{delivery_id}", guarded(delivery_page), methods=["GET"]),
    Route("/ui/deliveries/{delivery_id}/retry", guarded(retry_one), methods=["POST"]),
    Route("/ui/sinks", guarded(sinks_page), methods=["GET"]),
    Mount("/ui/static", StaticFiles(packages=[("receiver.ui", "static")]), name="ui-static"),
]
