"""The page in a real browser: Playwright driving Debian's Chromium (never a downloaded one)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

CHROMIUM = next(iter(glob.glob("/usr/lib/chromium/chromium")), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    opened = context.new_page()
    yield opened
    context.close()


def test_type_a_query_see_thumbnails_and_share_the_url(page, server, tmp_path):
    page.goto(server.url)
    page.fill("#q", "a red ball")
    page.press("#q", "Enter")
    page.wait_for_function(
        "document.querySelectorAll('#grid .card img').length >= 6 && "
        "[...document.querySelectorAll('#grid .card img')].every(i => i.complete && i.naturalWidth)"
    )
    assert "q=a+red+ball" in page.url
    assert "score" in page.inner_text("#grid .card .info")
    shot = tmp_path / "results.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.goto(page.url)  # the shared address shows the same search
    page.wait_for_selector("#grid .card")
    assert page.input_value("#q") == "a red ball"
    keep_screenshot(shot)


def test_open_a_result_and_find_similar(page, server):
    page.goto(server.url + "?q=photo")
    page.click("#grid .card:first-child img")
    page.wait_for_selector("#viewer[open]")
    page.wait_for_selector("#viewer-texts li")
    assert page.eval_on_selector("#viewer-img", "i => i.src").endswith("/file")
    page.click("#viewer-similar")
    page.wait_for_function("new URLSearchParams(location.search).has('similar')")
    page.wait_for_selector("#grid .card")
    assert "similar images" in page.inner_text("#message")
    page.go_back()
    page.wait_for_function("document.querySelector('#q').value === 'photo'")


def test_drop_an_image_file(page, server, served):
    page.goto(server.url)
    data = list((served[1] / "sea.png").read_bytes())
    page.evaluate(
        """data => {
            const file = new File([new Uint8Array(data)], 'sea.png', {type: 'image/png'});
            const transfer = new DataTransfer();
            transfer.items.add(file);
            document.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }""",
        data,
    )
    page.wait_for_selector("#grid .card")
    assert page.inner_text("#grid .card:first-child .name") == "sea.png"


def keep_screenshot(shot: Path) -> None:
    """Leave a copy where a person can look at it, when asked to ($PHOTOSEEK_SCREENSHOTS)."""
    folder = os.environ.get("PHOTOSEEK_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / shot.name).write_bytes(shot.read_bytes())


def test_the_viewer_shows_where_the_query_matches(page, explaining_server, tmp_path):
    page.goto(explaining_server.url + "?q=a+red+circle")
    page.click("#grid .card:first-child img")
    page.wait_for_selector("#viewer[open]")
    file_src = page.eval_on_selector("#viewer-img", "i => i.src")
    page.click("#viewer-explain")
    page.wait_for_function(
        "document.querySelector('#viewer-explain').getAttribute('aria-pressed') === 'true' && "
        "document.querySelector('#viewer-img').src.startsWith('blob:') && "
        "document.querySelector('#viewer-img').complete && "
        "document.querySelector('#viewer-img').naturalWidth > 0"
    )
    assert "a red circle" in page.inner_text("#viewer-note")
    shot = tmp_path / "explain.png"
    page.screenshot(path=str(shot))
    keep_screenshot(shot)
    page.click("#viewer-explain")  # off again: the photo itself
    page.wait_for_function(f"document.querySelector('#viewer-img').src === {file_src!r}")


def test_explain_without_an_itm_head_says_why(page, server):
    page.goto(server.url + "?q=photo")
    page.click("#grid .card:first-child img")
    page.wait_for_selector("#viewer[open]")
    page.click("#viewer-explain")
    page.wait_for_selector("#viewer-note.error")
    assert "ITM head" in page.inner_text("#viewer-note")


def test_explain_is_offered_on_text_searches_only(page, server):
    page.goto(server.url + "?q=photo")
    page.click("#grid .card:first-child img")
    page.wait_for_selector("#viewer[open]")
    assert page.is_visible("#viewer-explain")
    page.click("#viewer-similar")
    page.wait_for_function("new URLSearchParams(location.search).has('similar')")
    page.wait_for_selector("#grid .card")
    page.click("#grid .card:first-child img")
    page.wait_for_selector("#viewer[open]")
    assert not page.is_visible("#viewer-explain")
