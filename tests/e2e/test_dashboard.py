"""The dashboard in a real headless browser (Debian's chromium driven by
Playwright) against the real mesh: it loads with the traffic just sent, its
charts render, filters change the numbers to the filtered counts, and the
experiment view compares the arms of a routing config. One screenshot is
kept in var/artefacts/ (git-ignored)."""

from __future__ import annotations

import time
from pathlib import Path

import nats
import pytest
from openai import AsyncOpenAI
from playwright.async_api import Page, async_playwright

from switchyard.events import subject_for
from switchyard.launcher import ROOT, Mesh
from switchyard.v1 import usage_pb2 as upb
from tests.e2e.conftest import marker
from tests.e2e.test_analytics import analytics, send, wait_for

CHROMIUM = "/usr/bin/chromium"  # `make test` installs it when missing
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTEFACT = ROOT / "var" / "artefacts" / "dashboard.png"
ARMS = {"a": (12, 0.002, 300.0), "b": (8, 0.001, 900.0)}  # requests, cost each, latency


async def publish_experiment(mesh: Mesh, route: str, run: str) -> None:
    """Usage events of a weighted routing config with two arms, as the router
    publishes them once routing configs exist."""
    nc = await nats.connect(mesh.nats_url)
    try:
        js = nc.jetstream()
        now = int(time.time() * 1000)
        for arm, (count, cost, latency) in ARMS.items():
            for i in range(count):
                event = upb.UsageEvent(
                    request_id=f"{run}-{arm}-{i}", timestamp_ms=now - i * 1000, tenant="default", key_id="dev",
                    model_requested=f"@{route}", model="gpt-4o-mini", provider="openai", route=route,
                    route_version=3, route_arm=arm, status="ok", http_status=200, latency_ms=latency,
                    ttft_ms=latency / 3)
                event.usage.cost_usd = cost
                event.tags["run"] = run
                await js.publish(subject_for(event), event.SerializeToString(),
                                 headers={"Nats-Msg-Id": event.request_id})
    finally:
        await nc.close()


async def loaded(page: Page, times: int) -> None:
    # A selector, not a script: the page's CSP forbids evaluating strings.
    await page.wait_for_selector(f"body[data-loaded='{times}']", state="attached", timeout=20_000)


async def kpi(page: Page) -> int:
    return int((await page.text_content("#kpi-requests") or "").replace(",", ""))


async def test_dashboard_in_a_browser(mesh: Mesh, client: AsyncOpenAI) -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it (apt-get install chromium)"
    run, route = marker(), "exp-" + marker()
    await send(client, run, "gpt-4o-mini", 3)
    await send(client, run, "cheap", 2)
    await publish_experiment(mesh, route, run)
    await wait_for(mesh, run, 5 + sum(n for n, _, _ in ARMS.values()))
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
            assert await kpi(page) == 5 + sum(n for n, _, _ in ARMS.values())
            await page.select_option("#f-model", "gemini-2.5-flash")
            await loaded(page, 3)
            assert await kpi(page) == 2
            await page.select_option("#f-model", "")
            await loaded(page, 4)

            # The experiment view: one row per arm with its own figures.
            await page.select_option("#exp-route", route)
            await page.wait_for_selector(f"#exp-table[data-route='{route}'] tbody tr[data-arm='b']")
            for arm, (count, cost, latency) in ARMS.items():
                cells = await page.locator(f"#exp-table tbody tr[data-arm='{arm}'] td").all_text_contents()
                assert cells[1] == str(count) and cells[4] == f"{round(latency)} ms", cells
                assert float(cells[3].lstrip("$")) == pytest.approx(cost)  # cost per request
            assert await page.locator("#exp-cost svg rect.bar").count() == 2
            ARTEFACT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTEFACT), full_page=True)
            assert errors == []
        finally:
            await browser.close()
