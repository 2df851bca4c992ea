"""The dashboard in a real headless browser (Debian's chromium driven by
Playwright) against the real mesh: it loads with the traffic just sent, its
charts render, filters change the numbers to the filtered counts, and the
experiment view compares the arms of a routing config. One screenshot is
kept in var/artefacts/ (git-ignored)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from openai import AsyncOpenAI
from playwright.async_api import Page, async_playwright

from deploy.local.mesh import ROOT, Mesh
from tests.e2e.conftest import marker
from tests.e2e.test_analytics import analytics, send, wait_for

CHROMIUM = "/usr/bin/chromium"  # `make test` installs it when missing
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTEFACT = ROOT / "var" / "artefacts" / "dashboard.png"
EXPERIMENT = "fast-exp"  # a sticky 50/50 weighted routing config of the test config
USERS = 16


async def experiment_traffic(client: AsyncOpenAI, run: str) -> dict[str, tuple[int, float]]:
    """Requests through the weighted routing config, one end user each:
    (requests, cost) per arm as the response headers reported them."""
    arms: dict[str, tuple[int, float]] = {}
    for user in range(USERS):
        raw = await client.chat.completions.with_raw_response.create(
            model=f"@{EXPERIMENT}", messages=[{"role": "user", "content": "hello"}],
            extra_body={"mlx:tags": {"run": run}, "mlx:end_user": f"{run}-{user}"})
        count, cost = arms.get(raw.headers["x-switchyard-arm"], (0, 0.0))
        arms[raw.headers["x-switchyard-arm"]] = (count + 1, cost + float(raw.headers["x-switchyard-cost-usd"]))
    return arms


async def loaded(page: Page, times: int) -> None:
    # A selector, not a script: the page's CSP forbids evaluating strings.
    await page.wait_for_selector(f"body[data-loaded='{times}']", state="attached", timeout=20_000)


async def kpi(page: Page) -> int:
    return int((await page.text_content("#kpi-requests") or "").replace(",", ""))


async def test_dashboard_in_a_browser(mesh: Mesh, client: AsyncOpenAI) -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it (apt-get install chromium)"
    run = marker()
    await send(client, run, "gpt-4o-mini", 3)
    await send(client, run, "cheap", 2)
    arms = await experiment_traffic(client, run)
    assert set(arms) == {"control", "candidate"}  # 16 users at 50/50: both arms (p = 1 - 2^-15)
    await wait_for(mesh, run, 5 + USERS)
    _, everything = await analytics(mesh, mesh.api_key, "summary", [("since", "24h")])

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            started = time.perf_counter()
            await page.goto(f"{mesh.base_url}/analytics/dashboard#key={mesh.api_key}")
            await loaded(page, 1)
            print(f"\ndashboard load time: {(time.perf_counter() - started) * 1000:.0f} ms")
            assert "key=" not in page.url  # the key leaves the address bar
            assert await kpi(page) == everything["totals"]["requests"]
            assert await page.locator("#chart-cost svg rect.bar").count() > 0
            assert await page.locator("#chart-requests svg rect.bar").count() > 0
            assert await page.locator("#chart-latency svg path.line").count() == 3
            assert await page.locator("#top-keys svg rect.bar").count() >= 1
            assert await page.locator("#log tbody tr").count() > 0

            # Filters: this run's tag, then one model within it.
            await page.fill("#f-tag", f"run={run}")
            await page.click("#filters button[type=submit]")
            await loaded(page, 2)
            assert await kpi(page) == 5 + USERS
            await page.select_option("#f-model", "gemini-2.5-flash")
            await loaded(page, 3)
            assert await kpi(page) == 2 + arms["candidate"][0]  # `cheap`, and the experiment's candidate arm
            await page.select_option("#f-model", "")
            await loaded(page, 4)

            # The experiment view (this run's traffic, the tag filter still on): one row per arm.
            await page.select_option("#exp-route", EXPERIMENT)
            await page.wait_for_selector(f"#exp-table[data-route='{EXPERIMENT}'] tbody tr[data-arm='candidate']")
            for arm, (count, cost) in arms.items():
                cells = await page.locator(f"#exp-table tbody tr[data-arm='{arm}'] td").all_text_contents()
                assert cells[1] == str(count) and cells[4].endswith(" ms"), cells
                assert float(cells[3].lstrip("$")) == pytest.approx(cost / count, rel=1e-3, abs=1e-6)
            assert await page.locator("#exp-cost svg rect.bar").count() == 2
            ARTEFACT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTEFACT), full_page=True)
            assert errors == []
        finally:
            await browser.close()
