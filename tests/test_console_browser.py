"""The console in a real browser: Playwright drives headless Chromium (the system's,
Debian's ``chromium`` package, never a downloaded one) against a real ``dispatchd run``
with its own embedded Valkey (docs/console.md).

Skipped, with the reason, when no chromium is installed (``./dev test`` installs it when
run as root). The screenshots of docs/console.md are taken here, into docs/img/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin.server import free_port

CHROMIUM = os.environ.get("DISPATCHD_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium: install Debian's chromium package (./dev test does "
    "as root), or set DISPATCHD_CHROMIUM to a Chromium binary")
#: Where the screenshots go: docs/img/ (the ones docs/console.md shows) with
#: DISPATCHD_SCREENSHOTS=1, else a temporary directory, so that a test run leaves the
#: checkout as it was.
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
IMG = DOCS_IMG if os.environ.get("DISPATCHD_SCREENSHOTS") == "1" else Path(
    tempfile.gettempdir()) / "dispatchd-console-screenshots"
TOKEN = "dsp_console-browser-test-" + uuid.uuid4().hex


class Daemon:
    def __init__(self, base: str, tenant: str, redis_url: str) -> None:
        self.base, self.tenant, self.redis_url = base, tenant, redis_url
        self.http = httpx.Client(base_url=base, timeout=10,
                                 headers={"Authorization": f"Bearer {TOKEN}"})

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(method, f"/v1/tenants/{self.tenant}{path}", **kwargs)
        assert r.is_success, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def arrive(self, session: str, group: str) -> None:
        """A customer arrives, as a gateway: XADD to the tenant's inbound stream."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        cmd = {"type": "arrive", "id": f"c-{session}", "session": session, "group": group}
        client.xadd(f"{{{self.tenant}}}:in", {"json": json.dumps(cmd)})
        client.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    data = tmp_path_factory.mktemp("console-daemon")
    port = free_port("127.0.0.1")
    tenant = "acme"  # its own Valkey: a fixed id keeps the screenshots stable
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env |= {"DISPATCHD_DATA_DIR": str(data), "DISPATCHD_ADMIN_PORT": str(port),
            "DISPATCHD_METRICS_PORT": str(free_port("127.0.0.1")),
            "DISPATCHD_ADMIN_BOOTSTRAP_TOKEN": TOKEN, "DISPATCHD_TENANTS": tenant,
            "DISPATCHD_LOG_FORMAT": "text"}
    proc = subprocess.Popen([sys.executable, "-m", "dispatchd", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            assert proc.poll() is None, "dispatchd run exited"
            try:
                httpx.get(base + "/console/login", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        user = subprocess.run(
            [sys.executable, "-m", "dispatchd", "gateway-user", "add", "--tenant", tenant,
             "web"], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
        url = re.search(r"redis://\S+", user)
        assert url, user
        d = Daemon(base, tenant, url.group(0))
        made = d.http.post("/v1/tenants", json={"id": tenant, "name": "Acme"})
        assert made.status_code in (201, 409), made.text  # 409: DISPATCHD_TENANTS made it
        d.ok("POST", "/groups", json={"id": "billing", "service_level_ms": 20_000})
        d.ok("POST", "/groups", json={"id": "sales"})
        for agent, groups in (("ann", {"billing": 1}), ("bob", {"billing": 1, "sales": 1})):
            d.ok("POST", "/agents", json={"id": agent, "capacity": 2, "abilities": groups})
        # ann is away: a customer waits, and a supervisor's forced assign reaches her
        d.ok("POST", "/agents/ann/status", json={"status": "away"})
        yield d
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # the system chromium; --no-sandbox: CI runs the tests as root
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def new_page(browser: Any, daemon: Daemon, token: str = TOKEN) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(5000)
    page.goto(daemon.base + "/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(rf"/console/t/{daemon.tenant}$"))
    return page


def shot(page: Any, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMG / f"console-{name}.png"), full_page=True)


def every_control_is_labelled(page: Any) -> None:
    """Every input, select, textarea and button has an accessible name."""
    unnamed = page.evaluate("""() => {
      const bad = [];
      const controls = 'input:not([type=hidden]), select, textarea, button';
      for (const el of document.querySelectorAll(controls)) {
        const named = (el.labels && el.labels.length && el.labels[0].textContent.trim())
          || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
          || (el.tagName === 'BUTTON' && el.textContent.trim());
        if (!named) bad.push(el.outerHTML.slice(0, 120));
      }
      return bad;
    }""")
    assert unnamed == [], unnamed


def test_sign_in_wallboard_and_actions(browser: Any, daemon: Daemon) -> None:
    from playwright.sync_api import expect

    page = new_page(browser, daemon)
    t = daemon.tenant
    expect(page.locator("#live-status")).to_contain_text("Live")
    row = page.locator('tr[data-group="billing"] td.waiting')
    expect(row).to_have_text("0")
    started = time.monotonic()
    daemon.arrive("s1", "billing")
    expect(row).to_have_text("1", timeout=1000)  # a customer arrives: within a second
    assert time.monotonic() - started < 1.0
    every_control_is_labelled(page)
    shot(page, "wallboard")

    # assign the customer from the queue page
    page.goto(f"{daemon.base}/console/t/{t}/queues/billing")
    page.get_by_label("Assign s1 to", exact=True).select_option("ann")
    every_control_is_labelled(page)
    shot(page, "queue")
    page.get_by_role("button", name="Assign s1").click()
    expect(page.get_by_role("status")).to_contain_text("Session s1: assign done.")
    assert daemon.ok("GET", "/sessions/s1")["agent"] == "ann"

    # change an agent's status
    page.goto(f"{daemon.base}/console/t/{t}/agents")
    page.get_by_label("Status of bob", exact=True).select_option("away")
    page.get_by_role("button", name="Set status of bob").click()
    expect(page.get_by_role("status")).to_contain_text("Agent bob is now away.")
    expect(page.locator('tr[data-agent="bob"] td.status')).to_have_text("away")
    every_control_is_labelled(page)
    shot(page, "agents")

    # the session's history and its decision
    page.goto(f"{daemon.base}/console/t/{t}/sessions/s1")
    expect(page.get_by_role("heading", name="Why this agent?")).to_be_visible()
    history = page.locator("table", has=page.get_by_text("Every event of the session"))
    expect(history).to_contain_text("assigned")
    shot(page, "session")
    page.context.close()


def test_two_tabs_editing_a_group_see_the_version_conflict(browser: Any,
                                                            daemon: Daemon) -> None:
    from playwright.sync_api import expect

    one = new_page(browser, daemon)
    two = one.context.new_page()  # a second tab of the same signed-in browser
    two.set_default_timeout(5000)
    url = f"{daemon.base}/console/t/{daemon.tenant}/config/groups/sales"
    one.goto(url)
    two.goto(url)
    one.get_by_label("K (weight of spare capacity)").fill("90")
    one.get_by_role("button", name="Save group").click()
    expect(one.get_by_role("status")).to_contain_text("Group sales saved")
    two.get_by_label("K (weight of spare capacity)").fill("30")
    two.get_by_role("button", name="Save group").click()
    expect(two.get_by_role("alert")).to_contain_text("Someone else changed this group")
    expect(two.get_by_label("K (weight of spare capacity)")).to_have_value("90.0")
    # a bad value: the API's message next to its field
    two.get_by_label("Service-level target (0 to 1)").fill("2")
    two.get_by_role("button", name="Save group").click()
    expect(two.locator("#f-service-level-target-error")).to_contain_text("<= 1")
    expect(two.get_by_label("Service-level target (0 to 1)")).to_have_attribute(
        "aria-invalid", "true")
    every_control_is_labelled(two)
    shot(two, "group-conflict")
    assert daemon.ok("GET", "/groups/sales")["k"] == 90
    one.context.close()


def test_create_a_group_through_the_form(browser: Any, daemon: Daemon) -> None:
    """An admin creates a group on the configuration page, lands on its edit page, and
    sees it listed; a taken id shows the API's message by the id field."""
    from playwright.sync_api import expect

    page = new_page(browser, daemon)
    config = f"{daemon.base}/console/t/{daemon.tenant}/config"
    page.goto(config)
    every_control_is_labelled(page)
    page.get_by_label("New group id").fill("returns")
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_role("status")).to_contain_text("Group returns created (version 1).")
    expect(page.get_by_role("button", name="Save group")).to_be_visible()
    page.goto(config)
    expect(page.get_by_role("link", name="returns", exact=True)).to_be_visible()
    page.get_by_label("New group id").fill("returns")
    page.get_by_role("button", name="Create group").click()
    expect(page.locator("#f-new-group-id-error")).to_contain_text("this id is taken")
    expect(page.get_by_label("New group id")).to_have_attribute("aria-invalid", "true")
    every_control_is_labelled(page)
    shot(page, "config-create")
    assert daemon.ok("GET", "/groups/returns")["version"] == 1
    page.context.close()


def test_keyboard_only(browser: Any, daemon: Daemon) -> None:
    """Sign in and reach the wallboard's groups with the keyboard alone."""
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(5000)
    page.goto(daemon.base + "/console/login")
    expect(page.locator("#token")).to_be_focused()  # the token field has the focus
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/console/t/{daemon.tenant}$"))
    page.keyboard.press("Tab")  # the skip link comes first
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#board') !== null"):
            break
    assert page.evaluate("document.activeElement.closest('#board') !== null")
    page.keyboard.press("Enter")  # the first group's link: its queue
    expect(page).to_have_url(re.compile(r"/queues/billing$"))
    context.close()


def test_a_viewer_sees_no_action_and_a_revoked_token_signs_out(browser: Any,
                                                                daemon: Daemon) -> None:
    from playwright.sync_api import expect

    made = daemon.http.post("/v1/tokens", json={"name": "wall", "role": "viewer",
                                                "tenants": [daemon.tenant]}).json()
    page = new_page(browser, daemon, made["token"])
    page.goto(f"{daemon.base}/console/t/{daemon.tenant}/agents")
    expect(page.get_by_role("button", name=re.compile("Set status"))).to_have_count(0)
    expect(page.get_by_role("link", name="Configuration")).to_have_count(0)
    page.goto(f"{daemon.base}/console/t/{daemon.tenant}")
    expect(page.locator("#live-status")).to_contain_text("Live")
    daemon.http.delete(f"/v1/tokens/{made['id']}").raise_for_status()
    # the wallboard's stream is refused: the page reloads to the sign-in page, which says why
    page.wait_for_url(re.compile(r"/console/login$"), timeout=10_000)
    expect(page.locator("#ended")).to_contain_text("Your token was revoked.")
    page.context.close()


def test_read_a_decision(browser: Any, daemon: Daemon) -> None:
    """The session page's "Why this agent?" panel shows the recorded decision: the
    candidates compared with their score terms and the one chosen."""
    from playwright.sync_api import expect

    group = daemon.ok("GET", "/groups/sales")
    body = {k: v for k, v in group.items() if k not in ("id", "version", "in_service_hours")}
    daemon.ok("PUT", "/groups/sales", json={**body, "record_decisions": True})
    daemon.ok("POST", "/agents/bob/status", json={"status": "online"})
    daemon.arrive("s9", "sales")
    for _ in range(100):
        if daemon.ok("GET", "/sessions/s9")["agent"] == "bob":
            break
        time.sleep(0.05)
    page = new_page(browser, daemon)
    page.goto(f"{daemon.base}/console/t/{daemon.tenant}/sessions/s9")
    decision = page.get_by_role("article", name="Decision 1")
    expect(decision).to_contain_text("to bob in sales")
    expect(decision.get_by_role("row", name=re.compile(r"bob \(chosen\)"))).to_have_count(1)
    every_control_is_labelled(page)
    shot(page, "decision")
    page.context.close()
