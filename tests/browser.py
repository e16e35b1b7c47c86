"""What the browser tests share: Chromium, a JupyterLab process, and waiting on a page."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from playwright.async_api import async_playwright

from helpers import CHROMIUM, CHROMIUM_ARGS, free_port, jupyter_command, lab_home


def chromium_path() -> str:
    """Chromium's path; on CI (CI=true) its absence fails the test, elsewhere skips it."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"the browser test needs Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: JUPYTER_ROOMS_SCREENSHOTS if set (the README's come from
    there), the test's directory otherwise."""
    directory = Path(os.environ.get("JUPYTER_ROOMS_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class JupyterLab:
    """A ``jupyter lab`` process on 127.0.0.1 serving ``root``, in the test's own Jupyter
    directories; it can be stopped and started again on the same port (a restart).

    Args:
        tmp_path: The test's directory (config, data, runtime, settings go there).
        root: The server's root directory.
        token: The server's token.
        options: More command line options.
    """

    def __init__(self, tmp_path: Path, root: Path, token: str, *options: str) -> None:
        self.tmp_path = tmp_path
        self.root = root
        self.token = token
        self.options = options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = tmp_path / "jupyterlab.log"
        self.env = {**os.environ, **lab_home(tmp_path)}

    def start(self) -> None:
        """Start the server and wait until it answers."""
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            jupyter_command("lab", self.root, self.port, self.token, *self.options),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "JupyterLab did not start:\n" + self.log_path.read_text()
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server the way Ctrl+C twice does (it saves and shuts down)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def api(self, path: str) -> Any:
        """GET ``{url}/{path}`` with the token; the JSON answer."""
        separator = "&" if "?" in path else "?"
        url = f"{self.url}/{path}{separator}token={self.token}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)


@asynccontextmanager
async def browser_page(chromium: str, tmp_path: Path) -> AsyncIterator[tuple[Any, list[str]]]:
    """A page of headless Chromium that may reach 127.0.0.1 only; yields it and the list
    of errors it raises. Leaving checks that it reached nothing else."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1200, "height": 1000})
        outside: list[str] = []

        async def only_local(route: Any) -> None:
            if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:")):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await context.route("**/*", only_local)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        console = (tmp_path / "console.log").open("w")
        page.on("console", lambda message: print(message.type, message.text, file=console))
        try:
            yield page, errors
        finally:
            # What the page looked like at the end, to see why when the test fails.
            await page.screenshot(path=tmp_path / "page.png")
            await browser.close()
            console.close()
        assert outside == [], "the page reached beyond the machine"


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until `condition()` holds, failing after `seconds` (a bounded poll)."""
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


def kernel_ready(url: str, token: str, path: str) -> bool:
    """Whether the notebook at `path` has a kernel that is idle and that a page is
    connected to (the server's view)."""
    with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=5) as response:
        sessions = json.load(response)
    return any(
        session["path"] == path
        and session["kernel"]["execution_state"] == "idle"
        and session["kernel"]["connections"] > 0
        for session in sessions
    )


async def run_all_cells(page: Any, url: str, token: str, path: str, panel: Any = None) -> None:
    """Run every cell of the page's current notebook, once its kernel can take them, and
    wait until the last one has run (in `panel`, a locator, if the page shows several)."""
    with anyio.fail_after(60):
        while not await anyio.to_thread.run_sync(kernel_ready, url, token, path):
            await anyio.sleep(0.2)
    await page.get_by_role("menuitem", name="Run", exact=True).click()
    await page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    await page.wait_for_function(
        "el => /\\[\\d+\\]/.test(el.textContent)",
        arg=await (panel or page).locator(".jp-Notebook .jp-InputPrompt").last.element_handle(),
        timeout=60_000,
    )
