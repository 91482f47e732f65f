"""The dashboard in headless Chromium against a real node with tokens:
the overview loads with live numbers, pause from the queues page pauses
the queue (the CLI confirms), a replay from the dead-letter page
re-enqueues the job, a read-only token sees no buttons (and the server
refuses it anyway), and a payload holding <script> shows as text.
Screenshots of each page are saved and their paths printed.

Needs Debian's chromium and chromium-driver; skipped without them unless
DROVER_UI_TESTS=1 (as .ci/python.sh sets), when their absence fails."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import secrets
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from typing import Any, Iterator, List, Tuple

import pytest

import drover
from conftest import Node, drover_bin, wait_until

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = os.path.exists(CHROMEDRIVER)
if not HAVE_BROWSER and os.environ.get("DROVER_UI_TESTS") != "1":
    pytest.skip("chromium-driver is not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def token() -> Tuple[str, str]:
    t = "drv_" + secrets.token_hex(32)
    return t, "sha256:" + hashlib.sha256(t.encode()).hexdigest()


WORKER = token()


@pytest.fixture
def secured(tmp_path: pathlib.Path) -> Iterator[Tuple[Node, str, str]]:
    admin, admin_hash = token()
    reader, reader_hash = token()
    config = (
        '[retry.fragile]\nmax_retries = 0\n'
        f'[[tokens]]\nname = "root"\nrole = "admin"\nhash = "{admin_hash}"\n'
        f'[[tokens]]\nname = "viewer"\nrole = "read"\nhash = "{reader_hash}"\n'
        f'[[tokens]]\nname = "hands"\nrole = "worker"\nhash = "{WORKER[1]}"\n'
    )
    n = Node(tmp_path, config)
    yield n, admin, reader
    n.kill()


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def cli(node: Node, tok: str, *args: str) -> Any:
    out = subprocess.run(
        [drover_bin(), *args, "--server", f"http://{node.addr}", "--token", tok, "--json"],
        check=True, capture_output=True,
    )
    return json.loads(out.stdout)


def axe_check(driver: Any, page: str) -> None:
    """Runs axe-core on the page: no serious or critical violations."""
    path = os.environ.get("DROVER_AXE")
    if not path:
        if os.environ.get("DROVER_UI_TESTS") == "1":
            pytest.fail("DROVER_AXE names no axe.min.js (.ci/python.sh fetches it)")
        return
    driver.set_script_timeout(60)
    driver.execute_script(pathlib.Path(path).read_text())
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, { resultTypes: ['violations'] })"
        ".then((r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }))))"
        ".catch((e) => done([{ id: 'axe', impact: 'critical', help: String(e), nodes: [] }]));"
    )
    print(f"axe {page}: {len(found)} violations ({', '.join(sorted(v['id'] + ':' + str(v['impact']) for v in found)) or 'none'})")
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page}: {json.dumps(bad, indent=1)}"


def alert_of(driver: Any) -> Any:
    """The open alert, prompt or confirm, or None."""
    try:
        return driver.switch_to.alert
    except NoAlertPresentException:
        return None


def text_of(driver: Any, css: str) -> str:
    """The text of the first element `css` matches, read in one script:
    pages that refresh draw their elements anew, so a handle kept from an
    earlier look can be gone."""
    return str(driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css))


def sign_in(driver: Any, node: Node, tok: str) -> None:
    driver.get(node.http + "/")
    box = wait_until("the sign-in form", lambda: driver.find_elements(By.ID, "token"))
    box[0].send_keys(tok)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_until("signed in", lambda: "(" in driver.find_element(By.ID, "who").text)


def shot(driver: Any, shots: List[str], tmp: pathlib.Path, name: str) -> None:
    path = tmp / f"dashboard-{name}.png"
    driver.save_screenshot(str(path))
    shots.append(str(path))


def test_the_dashboard(secured: Tuple[Node, str, str], browser: Any, tmp_path: pathlib.Path) -> None:
    node, admin, reader = secured
    shots: List[str] = []
    p = drover.Producer(node.addr, token=admin)
    for i in range(3):
        p.enqueue("emails", f"mail {i}".encode(), run_id="r1")
    hostile = p.enqueue("emails", b"<script>alert(1)</script><img src=x onerror=alert(2)>")
    doomed = p.enqueue("fragile-q", b"", job_type="fragile")
    worker = drover.Worker(node.addr, queues=["fragile-q"], token=WORKER[0], worker_id="ui-worker", version="v1")

    runs: List[int] = []

    @worker.handler("fragile")
    def fail(job: drover.Job) -> bytes:
        runs.append(job.id)
        if len(runs) == 1:
            raise drover.JobError("smtp_down", "refused")
        return b"ok on replay"

    threading.Thread(target=worker.run, daemon=True).start()
    wait_until("the job dead", lambda: p.get(doomed).state == "dead")

    # A wrong token: the sign-in form says the node refused it, in its words.
    browser.get(node.http + "/")
    box = wait_until("the sign-in form", lambda: browser.find_elements(By.ID, "token"))
    box[0].send_keys("drv_wrong")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_until("the refusal", lambda: "refused this token" in text_of(browser, "form.login"))
    assert "HTTP 401" not in text_of(browser, "form.login")

    # Overview with live numbers.
    sign_in(browser, node, admin)
    cards = wait_until("the overview's cards", lambda: browser.find_elements(By.ID, "cards"))
    wait_until("live numbers", lambda: "4\nready jobs" in text_of(browser, "#cards") and "node 1" in text_of(browser, "#cards"))
    # The counters say since when they count; the chart is the node's own
    # history (10-second buckets over the hour, 5-minute over the day).
    assert "enqueued since" in text_of(browser, "#cards")
    note = text_of(browser, "#chart-note")
    assert "10 s buckets" in note and "since" in note
    def history() -> Any:
        return json.loads(urllib.request.urlopen(urllib.request.Request(
            node.http + "/api/v1/history?range=1h", headers={"authorization": f"Bearer {admin}"})).read())

    # The node samples its counters once a second: the enqueues are in the
    # hour's points by the next sample.
    wait_until("the enqueues in the history", lambda: sum(pt["enqueued"] for pt in history()["points"]) >= 5)
    assert len(history()["points"]) == 360
    browser.find_element(By.CSS_SELECTOR, 'button[data-range="24h"]').click()
    wait_until("the day's chart", lambda: "300 s buckets" in text_of(browser, "#chart-note"))
    shot(browser, shots, tmp_path, "overview")
    loaded_ms = browser.execute_script(
        "const t = performance.getEntriesByType('navigation')[0]; return t ? t.loadEventEnd - t.startTime : -1;"
    )
    print(f"\ndashboard loaded in {loaded_ms:.0f} ms")

    # A phone-width screen: nothing wider than the screen but tables,
    # which scroll in their own boxes.
    browser.set_window_size(390, 844)
    browser.refresh()
    wait_until("the overview on a phone", lambda: browser.find_elements(By.ID, "cards"))
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(browser, shots, tmp_path, "overview-phone")
    browser.set_window_size(1280, 900)

    # The refresh race: the overview's data comes slowly and the person
    # moves on meanwhile; the page they went to stays (no overview timer
    # left behind draws over it).
    browser.execute_script(
        "const f = window.fetch; window.fetch = (u, o) => new Promise((r) => "
        "setTimeout(() => r(f(u, o)), String(u).includes('/history') ? 1500 : 0));"
        "location.hash = '#/'; setTimeout(() => { location.hash = '#/queues'; }, 300);"
    )
    wait_until("the queues page", lambda: text_of(browser, "main h1") == "Queues")
    threading.Event().wait(6)
    assert text_of(browser, "main h1") == "Queues"
    browser.refresh()

    # Pause from the queues page; the CLI confirms.
    browser.get(node.http + "/#/queues")
    pause = wait_until("the pause button", lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-queue="emails"] button[data-action="pause"]'))
    pause[0].click()
    # It asks why; the answer is the audit record's reason.
    prompt = wait_until("the reason prompt", lambda: alert_of(browser))
    assert "Pause queue emails?" in prompt.text
    prompt.send_keys("smtp relay down")
    prompt.accept()
    wait_until("the CLI to see it paused", lambda: any(q["name"] == "emails" and q["paused"] for q in cli(node, admin, "queues", "list")["queues"]))
    wait_until("the page to show it", lambda: "paused" in browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="emails"]').text)
    # Its ready jobs are blocked, and the page says why.
    wait_until("the blocked count", lambda: text_of(browser, 'tr[data-queue="emails"] td.blocked') == "4 paused")
    audit = cli(node, admin, "audit")["records"][0]
    assert (audit["action"], audit["reason"]) == ("queues.pause", "smtp relay down"), audit

    # The queue's own page: its numbers, what holds its jobs and what
    # releases them, its policy in words.
    browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="emails"] a').click()
    wait_until("the queue's page", lambda: text_of(browser, "main h1").startswith("Queue emails"))
    held = wait_until("its holds", lambda: text_of(browser, 'tr[data-reason="paused"]'))
    assert "4" in held and "drover queues resume emails" in held, held
    cards = text_of(browser, "#queue-cards")
    assert "4\nblocked" in cards and "0\nrunnable" in cards, cards
    assert "heartbeat timeout" in text_of(browser, "dl.policy")
    shot(browser, shots, tmp_path, "queue")
    shot(browser, shots, tmp_path, "queues")

    # A hostile payload is text, and runs nothing.
    browser.get(node.http + f"/#/job/{hostile}")
    pre = wait_until("the payload", lambda: browser.find_elements(By.CSS_SELECTOR, "pre.payload"))
    assert pre[0].text == "<script>alert(1)</script><img src=x onerror=alert(2)>"
    # What holds it, and the command that releases it.
    held = text_of(browser, 'tr[data-reason="paused"]')
    assert "queue paused" in held and "drover queues resume emails" in held, held
    assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    shot(browser, shots, tmp_path, "job")

    # Replay from the dead-letter page.
    browser.get(node.http + "/#/dead")
    box = wait_until("the dead job's checkbox", lambda: browser.find_elements(By.CSS_SELECTOR, f'input[type=checkbox][value="{doomed}"]'))
    shot(browser, shots, tmp_path, "dead")
    box[0].click()
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="replay selected"]').click()
    wait_until("the replayed job to run", lambda: p.get(doomed).state == "succeeded")

    browser.get(node.http + "/#/workers")
    wait_until("the worker listed", lambda: "ui-worker" in browser.find_element(By.ID, "main").text)
    shot(browser, shots, tmp_path, "workers")
    browser.get(node.http + "/#/runs")
    wait_until("the run listed", lambda: "r1" in browser.find_element(By.ID, "main").text)
    shot(browser, shots, tmp_path, "runs")

    # Every other page, with what it should show; none has a serious or
    # critical accessibility fault (axe-core).
    pages = {
        "#/tenants": lambda: "default" in text_of(browser, 'tr[data-tenant="default"]'),
        "#/schedules": lambda: text_of(browser, "main h1") == "Schedules",
        "#/versions": lambda: "v1" in text_of(browser, "main"),
        "#/costs": lambda: "By tenant" in text_of(browser, "main"),
        "#/audit": lambda: "smtp relay down" in text_of(browser, "main"),
        "#/run/default/r1": lambda: text_of(browser, "main h1").startswith("Run r1")
        and "3\nenqueued" in text_of(browser, "#run-cards"),
    }
    for page, shows in pages.items():
        browser.get(node.http + "/" + page)
        wait_until(f"{page} to show its content", shows)
        shot(browser, shots, tmp_path, page.strip("#/").replace("/", "-"))
    # A refused search keeps what was typed, with the node's reason.
    browser.get(node.http + "/#/jobs?older_than=soon")
    refused = wait_until("the search refused", lambda: text_of(browser, "#search-error"))
    assert "older_than" in refused, refused
    assert browser.find_element(By.CSS_SELECTOR, 'input[name="older_than"]').get_attribute("value") == "soon"
    browser.get(node.http + "/#/audit?action=queues.drain")
    wait_until("the audit filter", lambda: "nothing" in text_of(browser, "main table"))
    for page in ("#/", "#/queues", "#/queue/emails", "#/jobs", f"#/job/{hostile}", "#/dead", "#/workers", "#/runs", *pages):
        browser.get(node.http + "/" + page)
        wait_until(f"{page} loaded", lambda: text_of(browser, "main h1") not in ("", "Loading…"))
        axe_check(browser, page)
    # At phone width nothing is wider than the screen but tables, which
    # scroll in their own boxes.
    browser.set_window_size(390, 844)
    for page in ("#/", "#/queues", "#/queue/emails", "#/jobs", f"#/job/{hostile}", "#/dead", "#/workers", "#/runs", *pages):
        browser.get(node.http + "/" + page)
        wait_until(f"{page} loaded", lambda: text_of(browser, "main h1") not in ("", "Loading…"))
        wide = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 1, f"{page} is {wide} px wider than a phone's screen"
    shot(browser, shots, tmp_path, "queue-phone")
    browser.set_window_size(1280, 900)

    # A read-only token: no buttons, and the server refuses the action.
    browser.find_element(By.CSS_SELECTOR, "#who button").click()
    wait_until("the sign-in form", lambda: browser.find_elements(By.ID, "token"))
    assert "root" not in text_of(browser, "#who"), "signed out, the old role is gone"
    sign_in(browser, node, reader)
    browser.get(node.http + "/#/queues")
    wait_until("the queues for the reader", lambda: "emails" in browser.find_element(By.ID, "main").text)
    for page in ("#/queues", "#/dead", "#/workers", "#/runs", f"#/job/{hostile}"):
        browser.get(node.http + "/" + page)
        wait_until(f"{page} loaded", lambda: "Loading" not in browser.find_element(By.ID, "main").text)
        assert not browser.find_elements(By.CSS_SELECTOR, "main button"), page
    request = urllib.request.Request(node.http + "/api/v1/queues/emails/resume", method="POST",
                                     headers={"authorization": f"Bearer {reader}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 403
    shot(browser, shots, tmp_path, "read-only")

    # A node that stops answering: the page keeps what it had, says when it
    # last refreshed, and a banner says the refresh failed.
    browser.get(node.http + "/#/queues")
    wait_until("the queues", lambda: "emails" in text_of(browser, "main"))
    wait_until("the refresh time", lambda: text_of(browser, "#updated").startswith("updated"))
    worker.stop()
    node.stop()
    banner = wait_until("the banner", lambda: text_of(browser, "#banner"))
    assert "Refresh failed" in banner, banner
    assert "emails" in text_of(browser, "main"), "what was loaded stays"
    assert text_of(browser, "#updated").startswith("last try")
    shot(browser, shots, tmp_path, "node-down")
    listing = "dashboard screenshots:\n  " + "\n  ".join(shots) + "\n"
    print("\n" + listing)
    if os.environ.get("DROVER_SCREENSHOT_LIST"):
        pathlib.Path(os.environ["DROVER_SCREENSHOT_LIST"]).write_text(listing)
