"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

One relay for the module: a simulator with three phones (262 never polls: offline), a
gateway in front of it that refuses one body (poison: those messages end ``rejected`` with
its words), messages dispatched by a real worker and followed by a real reconciler, then
more left queued (no worker runs afterwards, so every number holds still), and
``relay serve``'s app on a free port. One Chromium for the module (launched with exactly the
flags of the issue and an empty user-data dir); every page records its requests (any that
is not for 127.0.0.1 is aborted and fails the test) and its console errors (none allowed).

Without ``/usr/bin/chromium`` (or Playwright) the browser tests are skipped with the reason
(failed instead with ``RELAY_TEST_REQUIRE_CHROMIUM=1``, for CI, which installs it). Real
Redis when one answers, else fakeredis's TCP server. Screenshots go to the test's tmp dir;
with ``RELAY_DASHBOARD_SCREENSHOT=path.png`` the laptop one is written there too (that is
how ``docs/dashboard.png`` is made).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import redis

from relay.api.server import ServerThread
from relay.context import Context
from relay.produce.producer import Producer
from relay.reconcile.reconciler import Reconciler
from relay.run.burst import run_until_idle
from relay.settings import Settings, load_settings
from relay.simulator import SimDevice, Simulator
from tests.fixtures.http import make_key
from tests.fixtures.redis import REAL_URL, FakeRedisServer
from tests.test_gateway_garbage import StubGateway
from tests.test_poison import POISON, WORDS, refuse_poison

CHROMIUM = os.environ.get("RELAY_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000
"""How long a check waits for the page (the page polls every second: it takes ~1 s)."""

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


# --- the relay under test ---------------------------------------------------------------


@dataclass
class Site:
    url: str
    settings: Settings
    ctx: Context
    admin: str
    read: str
    send: str
    delivered: list[str] = field(default_factory=list)
    poison: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    dropin: tuple[int, str] = (0, "")
    phones: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None) -> httpx.Client:
        key = self.admin if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def get(self, path: str, key: str | None = None) -> Any:
        with self.client(key) as client:
            answer = client.get(path)
            answer.raise_for_status()
            return answer.json()

    def state(self, msg_id: str) -> str | None:
        with self.client() as client:
            answer = client.get(f"/v1/messages/{msg_id}")
        return None if answer.status_code == 404 else str(answer.json()["state"])


def _redis_url(request: pytest.FixtureRequest) -> str:
    try:
        redis.Redis.from_url(REAL_URL, socket_connect_timeout=0.5).ping()
        return REAL_URL
    except redis.RedisError:
        fake: FakeRedisServer = request.getfixturevalue("fake_redis_server")
        return fake.url


def _settle(ctx: Context, ids: list[str], timeout: float = 20.0) -> None:
    """Reconciler passes until the gateway reported on every message of ``ids`` (sent,
    delivered or failed: a sent one may wait long for its delivery report)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        Reconciler(ctx).run_once()
        states = {m.state.value for m in ctx.store.get_many(ids) if m is not None}
        if states <= {"sent", "delivered", "failed"}:
            return
        time.sleep(0.1)
    raise AssertionError(f"the reconciler did not follow every message: {states}")


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    sim = Simulator(
        [
            SimDevice(id=260, title="Front desk", delaybetweenrequest=0.05, delaybetweeneachsms=0),
            SimDevice(id=261, title="Warehouse", delaybetweenrequest=0.05, delaybetweeneachsms=1),
            SimDevice(id=262, title="Basement", online=False, created=time.time() - 3 * 3600),
        ],
        default_each=0.01,
    ).start()
    stub = StubGateway(sim.url, refuse_poison)
    prefix = f"tdash{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        redis_url=_redis_url(request),
        key_prefix=prefix,
        log_json=True,
        gateway_url=stub.url,
        gateway_token=sim.token,
        gateway_timeout=5.0,
        batch_max=10,
        max_attempts=1,
        pools={"night": ["262:0"]},
        device_limits={"261:0": {"per_hour": 50}},
    )
    ctx = Context.from_settings(settings)
    server = None
    try:
        site = _populate(ctx, settings)
        server = ServerThread(settings).start(20)
        site.url = server.url
        _dropin_message(site)
        yield site
    finally:
        if server is not None:
            server.stop()
        keys = list(ctx.conn.scan_iter(match=f"{prefix}:*", count=1000))
        keys += list(ctx.conn.scan_iter(match=f"rq:*{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            ctx.conn.delete(*keys[i : i + 500])
        ctx.close()
        stub.stop()
        sim.stop()


def _populate(ctx: Context, settings: Settings) -> Site:
    """Delivered, rejected and queued messages, as a worker and a reconciler leave them."""
    producer = Producer(ctx)
    phones = {f"+49157520000{i:02d}": f"message {i}" for i in range(6)}
    sent = [
        {"sendto": phone, "body": body, "device_id": 260, "urgent": i % 2 == 0}
        for i, (phone, body) in enumerate(phones.items())
    ]
    poison = [
        {"sendto": f"+49157529999{i:02d}", "body": POISON, "device_id": 260} for i in range(2)
    ]
    delivered = producer.send_many(sent)
    poisoned = producer.send_many(poison)
    assert run_until_idle(ctx, 30), "relay did not settle"
    _settle(ctx, delivered)
    queued = producer.send_many(
        [{"sendto": f"+4915752111{i:03d}", "body": "bulk", "device_id": 261} for i in range(7)]
        + [{"sendto": f"+4915752222{i:03d}", "body": "bulk", "device_id": 262} for i in range(4)]
        + [{"sendto": "+4915752333000", "body": "code 1234", "device_id": 261, "urgent": True}]
        + [{"sendto": f"+4915752444{i:03d}", "body": "pooled", "pool": "night"} for i in range(2)]
    )
    return Site(
        url="",
        settings=settings,
        ctx=ctx,
        admin=make_key(settings, "admin", "admin"),
        read=make_key(settings, "viewer", "read"),
        send=make_key(settings, "sender", "send"),
        delivered=delivered,
        poison=poisoned,
        queued=queued,
        phones={phone: msg_id for phone, msg_id in zip(phones, delivered, strict=True)},
    )


def _dropin_message(site: Site) -> None:
    """One message through the drop-in front: its integer id and relay id."""
    params: dict[str, str | int] = {
        "token": site.send,
        "sendto": "+4915752444000",
        "body": "drop-in",
        "device_id": 261,
    }
    answer = httpx.get(f"{site.url}/getdata/addsms", params=params, timeout=10).json()
    assert answer["error"] == 0, answer
    number = int(answer["sms_id"])
    record = site.get(f"/v1/lookup?q={number}")["messages"][0]
    site.dropin = (number, record["id"])


# --- the browser --------------------------------------------------------------------------


@dataclass
class Watch:
    """What one page did: every request's URL, requests aborted for leaving 127.0.0.1, and
    console errors and uncaught exceptions."""

    requests: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and parsed.hostname == "127.0.0.1"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium, headless, with the issue's flags and an empty user-data dir."""
    if not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install -y chromium): browser tests not run"
        if os.environ.get("RELAY_TEST_REQUIRE_CHROMIUM") == "1":
            pytest.fail(why + " (RELAY_TEST_REQUIRE_CHROMIUM=1)")
        pytest.skip(why)
    profile = tmp_path_factory.mktemp("chromium-profile")
    assert not any(profile.iterdir())
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page with no cookies; afterwards: no request left 127.0.0.1, no console error."""
    browser.clear_cookies()
    watch = Watch()

    def outside(route: Any) -> None:
        watch.outside.append(route.request.url)
        route.abort()

    browser.route(lambda url: not _local(url), outside)
    tab = browser.new_page()
    tab.on("request", lambda req: watch.requests.append(req.url))

    def console(msg: Any) -> None:
        if msg.type == "error":
            watch.errors.append(msg.text)

    tab.on("console", console)
    tab.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    yield tab
    tab.close()
    browser.unroute_all()
    assert watch.requests, "the page made no request"
    assert watch.outside == [], f"requests left 127.0.0.1: {watch.outside}"
    assert all(_local(url) for url in watch.requests), watch.requests
    assert watch.errors == [], f"console errors: {watch.errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"\nscreenshots: {folder}")
    return folder


def login(page: Any, site: Site, key: str) -> None:
    """Log in through the login page and wait until the page painted its first data."""
    page.goto(f"{site.url}/dashboard")
    assert page.url.endswith("/dashboard/login")
    page.fill("#key", key)
    submit(page)
    assert page.url == f"{site.url}/dashboard"
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)


def submit(page: Any) -> None:
    """Send the login form and wait for the page it leads to."""
    with page.expect_navigation():
        page.click("button[type=submit]")


def shown(page: Any, selector: str) -> int:
    """The number a cell shows (as a person reads it: ``1,234`` is 1234)."""
    return int(page.inner_text(selector).replace(",", "").strip())


def wait_number(page: Any, selector: str, expected: int) -> None:
    page.wait_for_function(
        "([sel, n]) => { const el = document.querySelector(sel);"
        " return el && Number(el.textContent.replace(/,/g, '')) === n; }",
        arg=[selector, expected],
        timeout=WAIT_MS,
    )


# --- the tests ----------------------------------------------------------------------------


def test_no_data_on_any_page_without_a_key(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/dashboard")
    assert page.url == f"{site.url}/dashboard/login"
    html = page.content()
    for msg_id in [*site.delivered, *site.poison, *site.queued]:
        assert msg_id not in html
    for phone in site.phones:
        assert phone not in html
    assert page.query_selector("[data-total]") is None
    for path in ("/v1/stats", "/v1/dead", "/v1/history", f"/v1/lookup?q={site.delivered[0]}"):
        assert page.request.get(f"{site.url}{path}").status == 401, path

    page.fill("#key", "rk_" + "x" * 43)
    submit(page)
    assert "Unknown or revoked API key" in page.inner_text("#login-error")
    assert page.query_selector("[data-total]") is None

    page.fill("#key", site.send)
    submit(page)
    assert "cannot read the dashboard" in page.inner_text("#login-error")
    assert page.request.get(f"{site.url}/v1/stats").status == 401

    page.fill("#key", site.read)
    submit(page)
    page.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    [cookie] = [c for c in page.context.cookies() if c["name"] == "relay_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert site.read not in cookie["value"] and len(cookie["value"]) >= 40
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it

    page.click("text=Log out")
    page.wait_for_url(f"{site.url}/dashboard/login")
    assert page.request.get(f"{site.url}/v1/stats").status == 401


def test_the_numbers_on_the_page_are_those_of_v1_stats(page: Any, site: Site, shots: Path) -> None:
    login(page, site, site.read)
    first_data_ms = page.evaluate("performance.getEntriesByName('relay:first-data')[0].startTime")
    print(f"\nfirst data painted {first_data_ms:.0f} ms after navigation started")
    (shots / "first-paint.txt").write_text(f"{first_data_ms:.1f} ms\n")

    before = time.time()
    page.wait_for_function(
        "t => Number(document.body.dataset.statsAt) > t", arg=before, timeout=WAIT_MS
    )
    stats = site.get("/v1/stats")
    for name in ("queued", "scheduled", "inflight", "awaiting"):
        assert shown(page, f"[data-total='{name}']") == stats["totals"][name], name
    assert stats["totals"]["queued"] >= 12
    for state, count in stats["states"].items():
        assert shown(page, f"[data-state='{state}']") == count, state
    assert stats["states"]["delivered"] + stats["states"]["sent"] >= 1
    assert len(stats["lanes"]) >= 3
    for lane in stats["lanes"]:
        row = f"[data-lane='{lane['device_id']}:{lane['sim']}']"
        for name in ("urgent", "bulk", "scheduled", "inflight", "verifying", "awaiting"):
            assert shown(page, f"{row} [data-field='{name}']") == lane[name], (row, name)
    assert shown(page, "[data-total='dead']") == len(site.get("/v1/dead"))

    # which phone is offline, which is behind: said in words on its row
    assert "offline" in page.inner_text("[data-lane='262:0']")
    assert "Basement" in page.inner_text("[data-lane='262:0']")
    assert "urgent waiting" in page.inner_text("[data-lane='261:0']")
    history = site.get("/v1/history")
    submitted = sum(row["submitted"] for row in history["throughput"])
    assert submitted >= len(site.delivered)
    assert shown(page, "[data-hour='submitted']") == submitted
    assert page.query_selector_all("#chart polyline.series")
    urgent = history["latency"][0]
    assert urgent["count"] >= 3 and urgent["p50_ms"] is not None
    p50 = urgent["p50_ms"]
    assert page.inner_text("[data-latency='p50-5']").strip() == (
        f"{p50} ms" if p50 < 1000 else f"{p50 / 1000:.2f} s"
    )

    page.screenshot(path=str(shots / "dashboard-laptop.png"), full_page=True)
    target = os.environ.get("RELAY_DASHBOARD_SCREENSHOT")
    if target:
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.screenshot(path=target, full_page=False)
        page.set_viewport_size({"width": 1280, "height": 900})

    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow} px wider than a phone's screen"
    page.screenshot(path=str(shots / "dashboard-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_pools_and_quotas_on_the_page(page: Any, site: Site) -> None:
    login(page, site, site.read)
    page.wait_for_function(
        "t => Number(document.body.dataset.statsAt) > t", arg=time.time(), timeout=WAIT_MS
    )
    stats = site.get("/v1/stats")
    (pool,) = stats["pools"]
    assert (pool["name"], pool["urgent"] + pool["bulk"]) == ("night", 2)
    heading = page.inner_text("#lanes th[scope='rowgroup']")
    assert "Pool night" in heading and "2 waiting in the pool" in heading
    assert (pool["status"] in heading) == pool["held"]
    assert "262:0" in {f"{lane['device_id']}:{lane['sim']}" for lane in stats["lanes"]}
    (quota,) = stats["quotas"]
    used = quota["hour_used"]
    assert f"{used} / 50" in page.inner_text("[data-lane='261:0']")


def test_a_change_appears_without_a_reload_and_events_pause(page: Any, site: Site) -> None:
    login(page, site, site.read)
    page.evaluate("window.notReloaded = true")
    queued = shown(page, "[data-total='queued']")
    with site.client(site.send) as client:
        sent_at = time.monotonic()
        answer = client.post(
            "/v1/messages", json={"sendto": "+4915752555000", "body": "live", "device_id": 261}
        )
        new_id = answer.json()["id"]
    wait_number(page, "[data-total='queued']", queued + 1)
    print(f"\nthe page showed the new message {time.monotonic() - sent_at:.2f} s after it was sent")
    page.wait_for_selector(f"#events-table th:text-is('{new_id}')", timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True

    page.click("#pause")
    assert page.get_attribute("#pause", "aria-pressed") == "true"
    with site.client(site.send) as client:
        held = client.post(
            "/v1/messages", json={"sendto": "+4915752555001", "body": "held", "device_id": 261}
        ).json()["id"]
    wait_number(page, "[data-total='queued']", queued + 2)  # the numbers stay live
    page.wait_for_function(
        "document.querySelector('#paused-note').textContent.includes('1 new event')",
        timeout=WAIT_MS,
    )
    assert page.query_selector(f"#events-table th:text-is('{held}')") is None
    page.click("#pause")
    page.wait_for_selector(f"#events-table th:text-is('{held}')", timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True
    site.queued += [new_id, held]


def test_a_read_key_sees_dead_letters_and_cannot_act(page: Any, site: Site) -> None:
    login(page, site, site.read)
    row = f"[data-dead='{site.poison[0]}']"
    page.wait_for_selector(row, timeout=WAIT_MS)
    assert WORDS in page.inner_text(row)
    assert page.query_selector(f"{row} button") is None
    assert "read-only key" in page.inner_text(row)
    csrf = page.get_attribute("meta[name='csrf-token']", "content")
    retry = f"{site.url}/v1/dead/{site.poison[0]}/retry"
    no_token = page.request.post(retry)
    assert no_token.status == 403 and no_token.json()["error"]["code"] == "csrf"
    with_token = page.request.post(retry, headers={"X-CSRF-Token": csrf})
    assert with_token.status == 403 and with_token.json()["error"]["code"] == "forbidden"
    assert site.state(site.poison[0]) == "rejected"


def test_retry_and_purge_change_the_message_state(page: Any, site: Site) -> None:
    retried, purged = site.poison
    login(page, site, site.admin)
    page.wait_for_selector(f"[data-dead='{retried}']", timeout=WAIT_MS)
    forged = page.request.post(f"{site.url}/v1/dead/{retried}/retry")  # no CSRF token
    assert forged.status == 403 and site.state(retried) == "rejected"

    # retry, by keyboard: focus the button, Enter opens the confirmation, confirm
    page.focus(f"[data-dead='{retried}'] button[data-action='retry']")
    page.keyboard.press("Enter")
    assert page.is_visible("#confirm")
    assert retried in page.inner_text("#confirm-text")
    page.click("#confirm-ok")
    page.wait_for_selector(f"[data-dead='{retried}']", state="detached", timeout=WAIT_MS)
    assert site.state(retried) == "queued"
    assert f"Message {retried}: queued" in page.inner_text("#action-status")

    # purge: cancelled at the confirmation, nothing happens; confirmed, the record is gone
    page.click(f"[data-dead='{purged}'] button[data-action='purge']")
    assert "cannot be undone" in page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    assert not page.is_visible("#confirm")
    assert site.state(purged) == "rejected"
    page.click(f"[data-dead='{purged}'] button[data-action='purge']")
    page.click("#confirm-ok")
    page.wait_for_selector(f"[data-dead='{purged}']", state="detached", timeout=WAIT_MS)
    assert site.state(purged) is None
    site.queued.append(retried)


def test_the_lookup_finds_a_message_by_each_kind_of_id(page: Any, site: Site) -> None:
    login(page, site, site.read)
    phone, by_phone = next(iter(site.phones.items()))
    number, by_number = site.dropin
    national = "0" + phone.removeprefix("+49")
    for query, expected, via in (
        (site.delivered[1], site.delivered[1], "id"),
        (str(number), by_number, "dropin"),
        (national, by_phone, "phone"),
    ):
        page.fill("#q", query)
        page.press("#q", "Enter")
        article = f"#lookup-result article[data-message='{expected}']"
        page.wait_for_selector(article, timeout=WAIT_MS)
        text = page.inner_text(article)
        assert via in text, (query, text)
        record = site.get(f"/v1/messages/{expected}")
        assert record["state"] in text
        for state in record["times"]:
            assert page.query_selector(f"{article} li[data-step='{state}']"), (query, state)
    assert "delivered" in page.inner_text(f"#lookup-result article[data-message='{by_phone}']")


def test_assets_come_from_relay_itself(site: Site) -> None:
    """Every asset the pages name is served by relay (no CDN), with a CSP that allows
    nothing else."""
    with site.client("") as client:
        login_page = client.get("/dashboard/login")
        csp = login_page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        with site.client(site.read) as reader:
            html = reader.get("/dashboard").text
        for name in ("dashboard.js", "chart.js", "dashboard.css", "favicon.svg"):
            assert f"/dashboard/assets/{name}" in html
            assert client.get(f"/dashboard/assets/{name}").status_code == 200
        assert "http://" not in html and "https://" not in html


@pytest.fixture(scope="module", autouse=True)
def _keep_screenshot_dir(shots: Path) -> Iterator[None]:
    yield
    keep = os.environ.get("RELAY_DASHBOARD_ARTEFACTS")
    if keep:
        shutil.copytree(shots, keep, dirs_exist_ok=True)
