"""The web console in a real browser: Playwright driving Debian's Chromium (headless, launched by its path)
against the running stack, through Nginx as a person would reach it.

The tests run in file order and build on each other: the knowledge base created in the browser is the one
uploaded to, asked and searched; the key made in the admin tab is the one revoked. Each saves a screenshot
under `.test-data/output/console/`; the time to the first answer in the browser goes to
`.test-data/logs/console-numbers.json`.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from deployments.config import AuthSettings
from tests import jwt_keys
from tests.conftest import TEST_ENV, Stack
from tests.integration.identity_helpers import call, make_key

DATA = Path(TEST_ENV["RAYCHAT_DATA_DIR"])
OUTPUT = DATA / "output" / "console"
NUMBERS = DATA / "logs" / "console-numbers.json"
ANSWER_TIMEOUT_MS = 180_000  # a CPU engine under a full suite answers in seconds; this is only a bound
FACT = "The blue gate of warehouse 7 opens with lever K-41 after the alarm is set."
HOSTILE = "Maintenance note <script>window.__pwned = 1</script> and <img src=x onerror='window.__pwned = 2'>."
INVALID_KEY = re.compile(r"invalid or missing API key", re.I)  # the gateway's 401, as shown
NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?(e-?\d+)?\s*$")
STATE: dict[str, Any] = {}  # what one test hands the next: the knowledge base, the key


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is missing: `make install` installs it (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def kb() -> str:
    return f"console-{uuid.uuid4().hex[:6]}"


def open_console(browser: Browser, stack: Stack, credential: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-US")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{stack.url}/")
    page.fill("#credential", credential)
    page.click("#signin-button")
    expect(page.locator("#whoami")).to_be_visible(timeout=30_000)
    return page


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def no_script_ran(page: Page) -> None:
    assert page.evaluate("window.__pwned") is None
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def finish(page: Page, name: str) -> None:
    """Every test ends the same way: its screenshot, no script from a document ran, no page error."""
    screenshot(page, name)
    no_script_ran(page)
    page.close()


def test_the_page_forbids_inline_script_framing_and_referrers(stack: Stack) -> None:
    assert f"Web console: {stack.url}/" in stack.up_output
    for url in (stack.url, stack.traefik_url):
        page = call(f"{url}/", "GET", None)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "<script>" not in page.text  # no inline script: only <script src=...>
    assert call(f"{stack.url}/console/app.js", "GET", None).status_code == 200
    for missing in ("/console/..%2Fsecrets%2Fadmin.key", "/console/nothing.js", "/console/index.html.bak"):
        refused = call(f"{stack.url}{missing}", "GET", None)
        assert refused.status_code == 404, missing


def test_sign_in_refuses_a_wrong_key_readably_then_shows_what_the_admin_may_do(
    browser: Browser, stack: Stack
) -> None:
    page = browser.new_page(locale="en-US")
    page.goto(f"{stack.url}/")
    page.fill("#credential", "rc-0123456789ab." + "A" * 43)
    page.click("#signin-button")
    notice = page.locator("#notice")
    expect(notice).to_contain_text(INVALID_KEY, timeout=30_000)
    assert '{"error"' not in notice.inner_text()
    expect(page.locator("#whoami")).to_be_hidden()
    page.close()
    page = open_console(browser, stack, stack.admin_key)
    expect(page.locator("#whoami")).to_contain_text("admin")
    for tab in ("chat", "knowledge", "admin"):
        expect(page.locator(f'[data-tab="{tab}"]')).to_be_visible()
    # Chinese, then back: the labels change, the console keeps working.
    page.select_option("#lang", "zh")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator('[data-tab="chat"]')).to_have_text("对话")
    screenshot(page, "signed-in-zh")
    page.select_option("#lang", "en")
    expect(page.locator('[data-tab="chat"]')).to_have_text("Chat")
    assert page.evaluate("sessionStorage.length") >= 1 and page.evaluate("localStorage.length") <= 1
    assert stack.admin_key not in page.evaluate("JSON.stringify(localStorage)")
    finish(page, "signed-in")


def test_create_a_knowledge_base_and_upload_with_progress(browser: Browser, stack: Stack, kb: str) -> None:
    page = open_console(browser, stack, stack.admin_key)
    page.click('[data-tab="knowledge"]')
    page.fill("#kb-create-name", kb)
    page.click("#kb-create")
    page.locator(f'.kb-item[data-kb="{kb}"]').click()
    expect(page.locator("#kb-selected")).to_have_text(kb)
    page.set_input_files(
        "#kb-upload-input",
        files=[
            {"name": "warehouse.md", "mimeType": "text/markdown", "buffer": f"# Gates\n\n{FACT}".encode()},
            # Markdown keeps raw HTML as text (the HTML loader would drop a script): the console must too.
            {"name": "hostile.md", "mimeType": "text/markdown", "buffer": HOSTILE.encode()},
        ],
    )
    page.click("#kb-upload")
    row = page.locator('tr.doc[data-doc="warehouse.md"]')
    expect(row).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    expect(row.locator(".doc-chunks")).to_have_text("1")
    expect(page.locator('tr.doc[data-doc="hostile.md"]')).to_be_visible()
    progress = page.locator("#kb-upload-progress")
    assert progress.evaluate("p => p.value") == progress.evaluate("p => p.max")
    STATE["kb"] = kb
    finish(page, "knowledge-base-uploaded")


def test_ask_about_the_upload_streamed_with_its_source(browser: Browser, stack: Stack) -> None:
    page = open_console(browser, stack, stack.admin_key)
    page.select_option("#chat-kb", STATE["kb"])
    page.fill("#chat-input", "Which lever opens the blue gate of warehouse 7?")
    started = time.perf_counter()
    page.click("#chat-send")
    answer = page.locator(".msg.assistant").last
    # The first words appear while the answer is still being generated.
    page.wait_for_function(
        "() => { const b = document.querySelector('.msg.assistant:last-of-type .msg-body');"
        " return b && b.textContent.trim().length > 0; }",
        timeout=ANSWER_TIMEOUT_MS,
    )
    first_words_s = time.perf_counter() - started
    expect(answer).to_have_class(re.compile(r"\bdone\b"), timeout=ANSWER_TIMEOUT_MS)
    complete_s = time.perf_counter() - started
    source = answer.locator(".source").first
    expect(source.locator(".source-doc")).to_have_text("warehouse.md")
    expect(source.locator(".source-text")).to_contain_text("lever K-41")
    NUMBERS.parent.mkdir(parents=True, exist_ok=True)
    NUMBERS.write_text(
        json.dumps({"first_words_s": round(first_words_s, 2), "answer_s": round(complete_s, 2)})
    )
    expect(page.locator("#chat-stop")).to_be_disabled()
    screenshot(page, "chat-answer-with-source")
    # The conversation is listed; a new chat empties the log, and opening the old one brings it back.
    expect(page.locator(".session-item").first).to_contain_text("blue gate", timeout=30_000)
    page.click("#new-chat")
    expect(page.locator("#chat-log .msg")).to_have_count(0)
    page.locator(".session-item", has_text="blue gate").first.click()
    expect(page.locator("#chat-log .msg.user")).to_contain_text("warehouse 7", timeout=30_000)
    expect(page.locator("#chat-log .msg.assistant")).to_have_count(1)
    finish(page, "earlier-conversation")


def test_search_shows_each_mode_and_a_document_with_script_stays_text(browser: Browser, stack: Stack) -> None:
    page = open_console(browser, stack, stack.admin_key)
    page.click('[data-tab="knowledge"]')
    page.locator(f'.kb-item[data-kb="{STATE["kb"]}"]').click()
    page.fill("#kb-search-input", "maintenance note script")
    page.click("#kb-search-button")
    for mode in ("vector", "fulltext", "hybrid"):
        expect(page.locator(f'.mode-results[data-mode="{mode}"] .hit').first).to_be_visible(timeout=30_000)
    hybrid = page.locator('.mode-results[data-mode="hybrid"]')
    expect(hybrid.locator(".hit-score").first).to_have_text(NUMBER)
    expect(page.locator("#kb-search-results")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.locator("#kb-search-results script, #kb-search-results img").count() == 0
    finish(page, "search-hostile-document-as-text")


def test_admin_makes_a_user_key_that_sees_only_its_grant_then_revokes_it(
    browser: Browser, stack: Stack
) -> None:
    admin = open_console(browser, stack, stack.admin_key)
    admin.click('[data-tab="admin"]')
    admin.fill("#key-name", "console-reader")
    admin.select_option("#key-role", "user")
    admin.fill("#key-kbs", STATE["kb"])
    admin.fill("#key-rpm", "100")
    admin.click("#key-create")
    secret = admin.locator("#key-secret")
    expect(secret).to_contain_text("rc-", timeout=30_000)
    key = secret.inner_text().strip()
    key_id = key.split(".")[0].removeprefix("rc-")
    row = admin.locator(f'tr.key[data-key-id="{key_id}"]')
    expect(row).to_contain_text("console-reader")
    screenshot(admin, "admin-key-created")

    user = open_console(browser, stack, key)
    expect(user.locator("#whoami")).to_contain_text("user")
    expect(user.locator('[data-tab="admin"]')).to_be_hidden()
    expect(user.locator('[data-tab="knowledge"]')).to_be_hidden()
    # The list fills in after sign-in: wait for the grant, then look at everything listed.
    expect(user.locator(f'#chat-kb option[value="{STATE["kb"]}"]')).to_be_attached(timeout=30_000)
    options = user.locator("#chat-kb option").evaluate_all("os => os.map(o => o.value).filter(v => v)")
    assert options == [STATE["kb"]]  # only its grant, though others exist
    screenshot(user, "user-sees-only-its-grant")

    row.locator(".key-revoke").click()
    expect(row).to_contain_text("revoked", timeout=30_000)
    # A revocation reaches every gateway replica within auth.key_cache_s (their caches of verified keys).
    time.sleep(AuthSettings().key_cache_s + 1)
    user.fill("#chat-input", "Is this key still valid?")
    user.click("#chat-send")
    notice = user.locator("#notice")
    expect(notice).to_contain_text(INVALID_KEY, timeout=30_000)
    assert '{"error"' not in notice.inner_text()
    finish(user, "revoked-key-refused")
    admin.close()


def test_the_organisations_token_signs_in_with_its_groups_and_grants(
    browser: Browser, stack: Stack, jwt_issuer: jwt_keys.Issuer
) -> None:
    token = jwt_issuer.token("carol", groups=["raychat-editors"], kbs=[STATE["kb"]])
    page = open_console(browser, stack, token)
    expect(page.locator("#whoami")).to_contain_text("editor")
    expect(page.locator('[data-tab="knowledge"]')).to_be_visible()
    expect(page.locator('[data-tab="admin"]')).to_be_hidden()
    page.click('[data-tab="knowledge"]')
    expect(page.locator(".kb-item")).to_have_count(1)
    expect(page.locator(f'.kb-item[data-kb="{STATE["kb"]}"]')).to_be_visible()
    expect(page.locator("#kb-create")).to_be_hidden()  # creating knowledge bases is an admin's
    finish(page, "editor-by-organisation-token")


def test_a_rate_limit_reads_as_a_sentence_and_the_console_goes_on(browser: Browser, stack: Stack) -> None:
    key = make_key(stack, "user", [STATE["kb"]], rpm=4)
    page = open_console(browser, stack, key.key)
    notice = page.locator("#notice")
    for attempt in range(6):  # the sign-in's own calls count too: the limit is reached within a few
        page.fill("#chat-input", f"Question {attempt}?")
        page.click("#chat-send")
        expect(page.locator("#chat-send")).to_be_enabled(timeout=ANSWER_TIMEOUT_MS)
        if "Rate limit" in (notice.text_content() or ""):
            break
    expect(notice).to_contain_text("Rate limit reached")
    assert '{"error"' not in notice.inner_text()
    expect(page.locator("#chat-input")).to_be_editable()
    finish(page, "rate-limited")


def test_cluster_at_a_glance(browser: Browser, stack: Stack) -> None:
    page = open_console(browser, stack, stack.admin_key)
    page.click('[data-tab="admin"]')
    expect(page.locator("#cluster-nodes")).to_contain_text("127.0.0.1", timeout=30_000)
    expect(page.locator("#cluster-deployments")).to_contain_text("LLM")
    expect(page.locator("#cluster-deployments")).to_contain_text("Gateway")
    expect(page.locator("#cluster-cache")).to_contain_text("%")
    expect(page.locator("#cluster-chart")).to_be_visible()
    page.locator("#cluster-chart").scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "cluster.png"))  # the viewport: the chart, not the keys above
    no_script_ran(page)
    page.close()
