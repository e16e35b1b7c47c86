"""RoomWidget in a real JupyterLab, driven in Chromium.

A notebook's first cell starts a websocket server in the kernel and connects the kernel
to four rooms; the next cells display their widgets. This test process joins the same
rooms as another person (`bob`) and checks what someone in front of the page would: bob's
edits appear in the page, what is typed in the page reaches bob, and typing while bob
inserts text before the caret keeps both the typed text and the caret where they belong.

Set JUPYTER_ROOMS_SCREENSHOTS to a directory to keep the screenshots (the README's come
from here); they go to the test's temporary directory otherwise.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Array, Map, Text

from jupyter_rooms import connect

from browser import JupyterLab, browser_page, chromium_path, run_all_cells, screenshot_dir, until
from helpers import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

TOKEN = "jupyter-rooms-widget-test"


def notebook_of(cells: list[str]) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "source": source,
                "outputs": [],
                "execution_count": None,
            }
            for i, source in enumerate(cells)
        ],
    }


def notebook(room_port: int) -> dict[str, Any]:
    """The notebook opened in JupyterLab: its kernel serves the rooms."""
    cells = [
        f"""\
import asyncio
from jupyter_rooms import bind, connect
from jupyter_rooms.widget import RoomWidget

clients = {{}}
ready = asyncio.Event()

async def keep_rooms_open():
    async with (
        bind("websocket", port={room_port}),
        connect("websocket", id="notes.txt", port={room_port}) as notes,
        connect("websocket", id="analysis.ipynb", port={room_port}) as analysis,
        connect("websocket", id="big.ipynb", port={room_port}) as big,
        connect("websocket", id="state", port={room_port}) as state,
    ):
        clients.update(notes=notes, analysis=analysis, big=big, state=state)
        ready.set()
        await asyncio.Event().wait()

rooms = asyncio.create_task(keep_rooms_open())
await ready.wait()""",
        'clients["notes"]',
        'RoomWidget(clients["analysis"])',
        'RoomWidget(clients["big"], max_height="20em")',
        'display(clients["state"])',
        # The README's way: a file's room on the notebook's own server.
        'todo = await connect("jupyter", id="todo.txt").start()\ntodo',
    ]
    return notebook_of(cells)


def second_notebook(room_port: int) -> dict[str, Any]:
    """The notebook opened in Jupyter Notebook 7: its kernel joins the text room."""
    return notebook_of(
        [
            f"""\
import asyncio
from jupyter_rooms import connect

ready = asyncio.Event()

async def keep_notes_open():
    global notes
    async with connect("websocket", id="notes.txt", port={room_port}) as notes:
        ready.set()
        await asyncio.Event().wait()

task = asyncio.create_task(keep_notes_open())
await ready.wait()""",
            "notes",
        ]
    )


ANALYSIS = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)"},
    },
    "cells": [
        {
            "cell_type": "markdown",
            "id": "m1",
            "metadata": {},
            "source": "# Rainfall by month\nLoad the readings and plot the monthly totals.",
        },
        {
            "cell_type": "code",
            "id": "k1",
            "metadata": {},
            "source": 'import pandas as pd\ndf = pd.read_csv("rain.csv")\ndf.head(3)',
            "execution_count": 1,
            "outputs": [
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "metadata": {},
                    "data": {
                        "text/plain": "        date   mm\n0 2024-01-01  3.2",
                        "text/html": "<table>...</table>",
                    },
                }
            ],
        },
        {
            "cell_type": "code",
            "id": "k2",
            "metadata": {},
            "source": 'monthly = df.groupby("month").mm.sum()\nprint(monthly.max())',
            "execution_count": 2,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "118.4\n"}],
        },
        {
            "cell_type": "code",
            "id": "k3",
            "metadata": {},
            "source": "monthly.plot(kind='bar')",
            "execution_count": 3,
            "outputs": [
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
                }
            ],
        },
        {
            "cell_type": "code",
            "id": "k4",
            "metadata": {},
            "source": "monthly['Feb'] / 0",
            "execution_count": 4,
            "outputs": [
                {
                    "output_type": "error",
                    "ename": "ZeroDivisionError",
                    "evalue": "float division by zero",
                    "traceback": [],
                }
            ],
        },
    ],
}


def big_notebook(cells: int) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": f"cell-{i}",
                "metadata": {},
                "source": f"# cell {i}\nx_{i} = {i} * 2\nprint(x_{i})",
                "execution_count": i + 1,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": f"{i * 2}\n"}],
            }
            for i in range(cells)
        ],
    }


@pytest.fixture
def chromium() -> str:
    return chromium_path()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return screenshot_dir(tmp_path)


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A JupyterLab on 127.0.0.1 serving a temporary root with the test notebook in it;
    yields its URL and the port the notebook's kernel will serve rooms on."""
    root = tmp_path / "root"
    root.mkdir()
    room_port = free_port()
    (root / "widget.ipynb").write_text(json.dumps(notebook(room_port)))
    (root / "notebook7.ipynb").write_text(json.dumps(second_notebook(room_port)))
    (root / "todo.txt").write_text("water the plants\n")
    lab = JupyterLab(tmp_path, root, TOKEN)
    lab.start()
    try:
        yield lab.url, room_port
    finally:
        lab.stop()


async def caret(textarea: Any) -> int:
    return int(await textarea.evaluate("el => el.selectionStart"))


async def shown_within(page: Any, selector: str, marker: str, edit: Callable[[], None]) -> float:
    """Milliseconds from `edit()` until the textarea at `selector` contains `marker`."""
    await page.evaluate(
        """([selector, marker]) => {
            window.jrSeen = new Promise((resolve) => {
                const check = () => {
                    const el = document.querySelector(selector);
                    if (el && el.value.includes(marker)) resolve(Date.now());
                    else setTimeout(check, 1);
                };
                check();
            });
        }""",
        [selector, marker],
    )
    sent = time.time() * 1000
    edit()
    seen = await page.evaluate("window.jrSeen")
    return float(seen - sent)


@pytest.fixture
async def page(chromium: str, jupyterlab: tuple[str, int], tmp_path: Path) -> AsyncIterator[Any]:
    url, _ = jupyterlab
    async with browser_page(chromium, tmp_path) as (page, errors):
        await page.goto(f"{url}/lab/tree/widget.ipynb?token={TOKEN}")
        yield page
        assert errors == [], "the page raised errors"


def widget(page: Any, room: str) -> Any:
    return page.locator(".jr-widget").filter(has=page.locator(".jr-room-id", has_text=room))


async def run_new_cell(page: Any, source: str) -> None:
    """Add a code cell below the notebook's last one and run it, with the keys a person
    would press."""
    await page.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputArea-editor").click()
    await page.keyboard.press("Escape")
    await page.keyboard.press("b")
    await page.keyboard.press("Enter")
    await page.keyboard.type(source)
    await page.keyboard.press("Shift+Enter")


async def test_the_widget_in_jupyterlab(
    page: Any, jupyterlab: tuple[str, int], screenshots: Path, tmp_path: Path
) -> None:
    _, room_port = jupyterlab
    await page.locator(".jp-Notebook").wait_for(timeout=60_000)
    await run_all_cells(page, jupyterlab[0], TOKEN, "widget.ipynb")

    notes = widget(page, "notes.txt")
    await notes.wait_for(timeout=60_000)
    # The kernel's client is connected; the room is still empty.
    await notes.locator(".jr-header[data-status='synchronized']").wait_for()
    await notes.locator(".jr-empty", has_text="empty").wait_for()

    async with AsyncExitStack() as stack:
        bob = {
            room: await stack.enter_async_context(connect("websocket", id=room, port=room_port))
            for room in ("notes.txt", "analysis.ipynb", "big.ipynb", "state")
        }

        # A text room: bob writes, the page shows it as text.
        source = bob["notes.txt"].doc.get("source", type=Text)
        source.insert(0, "Shopping list\n- apples\n- bread\n")
        editor = notes.locator("textarea.jr-editor")
        await editor.wait_for()
        assert (await notes.get_attribute("data-kind")) == "text"
        assert await editor.input_value() == str(source)

        # Bob's edits appear with no cell running, within 100 ms.
        latencies = []
        for i in range(5):
            marker = f"- item {i}\n"
            latencies.append(
                await shown_within(
                    page,
                    ".jr-widget[data-kind='text'] textarea",
                    marker,
                    lambda m=marker: source.insert(len(str(source)), m),  # type: ignore[misc]
                )
            )
        print(f"remote edit to page: {latencies} ms")
        assert statistics.median(latencies) < 100, latencies

        # Presence: bob's name shows in the header.
        bob["notes.txt"].awareness.set_local_state({"user": {"name": "bob", "color": "#8e24aa"}})
        await notes.locator(".jr-peer", has_text="bob").wait_for()

        # Typing in the page reaches bob, and the keys stay in the widget: Enter and
        # Shift+Enter break lines instead of running or editing the notebook's cells.
        prompts = page.locator(".jp-Notebook .jp-InputPrompt")
        before = await prompts.all_text_contents()
        await editor.click()
        await page.keyboard.press("Control+End")
        await page.keyboard.type("- eggs")
        await page.keyboard.press("Shift+Enter")
        await page.keyboard.type("- milk")
        await until(lambda: str(source).endswith("- eggs\n- milk"))
        assert await prompts.all_text_contents() == before

        # Bob inserts before the caret while the person types: the typed text stays whole
        # and the caret stays just after it.
        await page.keyboard.type(" and honey")
        source.insert(0, "[bob was here] ")
        await until(lambda: "was here" in str(source))
        await editor.evaluate("el => new Promise(r => requestAnimationFrame(r))")
        await page.keyboard.type(" please")
        expected_tail = "- milk and honey please"
        await until(lambda: str(source).endswith(expected_tail))
        # The page has every edit, bob's included (it may arrive after the typing's).
        await page.wait_for_function(
            "([el, text]) => el.value === text", arg=[await editor.element_handle(), str(source)]
        )
        value = await editor.input_value()
        assert value == str(source)
        assert await caret(editor) == len(value)

        # Truly concurrent: bob keeps inserting before the caret while the person types.
        typed = " (organic, if they have it)"

        async def bob_types() -> None:
            for i in range(8):
                source.insert(0, f"{i}")
                await anyio.sleep(0.03)

        async with anyio.create_task_group() as tg:
            tg.start_soon(bob_types)
            await page.keyboard.type(typed, delay=15)
        await until(lambda: str(source).endswith(expected_tail + typed))
        assert str(source).startswith("76543210[bob was here] Shopping list")
        await page.wait_for_function(
            "([el, text]) => el.value === text",
            arg=[await editor.element_handle(), str(source)],
        )
        assert await caret(editor) == len(str(source))
        await notes.screenshot(path=screenshots / "widget-text.png")

        # The same room in Jupyter Notebook 7, through another kernel: what is typed there
        # reaches bob and the JupyterLab page.
        classic = await page.context.new_page()
        classic_errors: list[str] = []
        classic.on("pageerror", lambda error: classic_errors.append(str(error)))
        url = page.url.split("/lab/")[0]
        await classic.goto(f"{url}/notebooks/notebook7.ipynb?token={TOKEN}")
        await classic.locator(".jp-Notebook").wait_for(timeout=60_000)
        # Notebook 7 reports errors of its own while it starts (commands of JupyterLab's
        # file browser it does not have); what happens from here on is the widget's.
        classic_errors.clear()
        try:
            await run_all_cells(classic, url, TOKEN, "notebook7.ipynb")
        finally:
            await classic.screenshot(path=tmp_path / "notebook7.png")
        classic_editor = widget(classic, "notes.txt").locator("textarea.jr-editor")
        await classic_editor.wait_for()
        assert await classic_editor.input_value() == str(source)
        await classic_editor.click()
        await classic.keyboard.press("Control+End")
        await classic.keyboard.press("Enter")
        await classic.keyboard.type("- tea (from Notebook 7)")
        await until(lambda: str(source).endswith("\n- tea (from Notebook 7)"))
        await page.wait_for_function(
            "([el, text]) => el.value === text",
            arg=[await editor.element_handle(), str(source)],
        )
        await classic.close()
        assert classic_errors == []

        # Undo takes back this page's own typing, not what others wrote.
        await editor.click()
        for _ in range(5):
            if "organic" not in await editor.input_value():
                break
            await page.keyboard.press("Control+z")
        await until(lambda: "organic" not in str(source))
        assert str(source).startswith("76543210[bob was here] Shopping list")
        assert str(source).endswith("- tea (from Notebook 7)")
        await page.keyboard.press("Control+Shift+z")
        await until(lambda: "(organic, if they have it)" in str(source))

        # A notebook room: cells with their type, source and a summary of outputs.
        analysis_nb = YNotebook(bob["analysis.ipynb"].doc)
        analysis_nb.set(ANALYSIS)
        analysis = widget(page, "analysis.ipynb")
        await analysis.locator(".jr-info", has_text="5 cells").wait_for()
        assert (await analysis.get_attribute("data-kind")) == "notebook"
        await analysis.locator(".jr-output", has_text="stdout: 118.4").wait_for()
        await analysis.locator(".jr-output", has_text="ZeroDivisionError").wait_for()
        await analysis.locator(".jr-output", has_text="[image/png]").wait_for()
        sources = analysis.locator("textarea.jr-source")
        assert await sources.nth(1).input_value() == ANALYSIS["cells"][1]["source"]
        assert (await analysis.locator(".jr-prompt").nth(2).text_content()) == "[2]"

        # Editing a cell in the page reaches bob; bob's new cell shows up.
        await sources.nth(2).click()
        await page.keyboard.press("Control+End")
        await page.keyboard.type("  # the wettest month")
        await until(lambda: analysis_nb.get_cell(2)["source"].endswith("# the wettest month"))
        analysis_nb.append_cell(
            {"cell_type": "code", "source": "monthly.describe()", "metadata": {}}
        )
        await analysis.locator(".jr-info", has_text="6 cells").wait_for()
        await page.wait_for_function(
            "el => [...el.querySelectorAll('textarea')].some(t => t.value === "
            "'monthly.describe()')",
            arg=await analysis.element_handle(),
        )
        # Cells added and deleted in the page.
        await (
            analysis.locator(".jr-cell.jr-built")
            .nth(0)
            .get_by_title("Insert a code cell below")
            .click()
        )
        await until(lambda: analysis_nb.cell_number == 7)
        assert analysis_nb.get_cell(1)["cell_type"] == "code"
        assert analysis_nb.get_cell(1)["source"] == ""
        # The page shows the new cell before its delete button is the one to press.
        await page.wait_for_function(
            "el => { const t = el.querySelectorAll('.jr-cell.jr-built textarea');"
            " return t.length > 2 && t[1].value === '' && t[2].value !== ''; }",
            arg=await analysis.element_handle(),
        )
        await analysis.locator(".jr-cell.jr-built").nth(1).get_by_title("Delete this cell").click()
        await until(lambda: analysis_nb.cell_number == 6)
        assert analysis_nb.get_cell(1)["source"] == ANALYSIS["cells"][1]["source"]
        bob["analysis.ipynb"].awareness.set_local_state({"user": {"name": "ada"}})
        await analysis.locator(".jr-peer", has_text="ada").wait_for()
        await analysis.scroll_into_view_if_needed()
        await page.mouse.move(0, 0)
        await analysis.screenshot(path=screenshots / "widget-notebook.png")

        # 2,000 cells: the first screen comes quickly, and only cells near it are built.
        big_nb = YNotebook(bob["big.ipynb"].doc)
        started = time.monotonic()
        big_nb.set(big_notebook(2000))
        big = widget(page, "big.ipynb")
        await big.locator(".jr-info", has_text="2000 cells").wait_for()
        await big.locator(".jr-cell.jr-built textarea").first.wait_for()
        first_screen = time.monotonic() - started
        print(f"2,000 cells: first screen after {first_screen:.2f} s")
        assert first_screen < 5, first_screen
        built = await big.locator(".jr-cell.jr-built").count()
        assert 0 < built < 100, built

        # A keystroke updates its own cell only: the other cells' elements stay as they
        # were, and bob's edit of a built cell changes that cell alone.
        await big.evaluate(
            "el => el.querySelectorAll('.jr-cell.jr-built textarea')"
            ".forEach(t => { t.jrMark = true; })"
        )
        first_source = big.locator("textarea.jr-source").first
        await first_source.click()
        await page.keyboard.press("Control+End")
        await page.keyboard.type("  # edited")
        await until(lambda: big_nb.get_cell(0)["source"].endswith("# edited"))
        big_nb.ycells[1]["source"].insert(0, "# bob\n")
        await page.wait_for_function(
            "el => el.querySelectorAll('textarea.jr-source')[1].value.startsWith('# bob')",
            arg=await big.element_handle(),
        )
        unmarked = await big.evaluate(
            "el => [...el.querySelectorAll('.jr-cell.jr-built textarea')]"
            ".filter(t => !t.jrMark).length"
        )
        assert unmarked == 0

        # Scrolling far down builds the cells there.
        await big.locator(".jr-cells").evaluate("el => { el.scrollTop = el.scrollHeight; }")
        await page.wait_for_function(
            "el => [...el.querySelectorAll('textarea.jr-source')]"
            ".some(t => t.value.startsWith('# cell 1999'))",
            arg=await big.element_handle(),
        )

        # A free-form room: a tree of its Maps, Arrays and Texts.
        state_doc = bob["state"].doc
        settings = state_doc.get("settings", type=Map)
        settings["title"] = "Field trip"
        settings["notes"] = Text("bring water")
        todo = state_doc.get("todo", type=Array)
        todo.extend(["tickets", "map"])
        tree = widget(page, "state")
        await tree.locator(".jr-key", has_text="settings").wait_for()
        await tree.locator(".jr-value", has_text='"Field trip"').wait_for()
        await tree.locator(".jr-value", has_text='"map"').wait_for()
        assert (await tree.get_attribute("data-kind")) == "free"
        notes_text = tree.locator("textarea.jr-text")
        assert await notes_text.input_value() == "bring water"
        await notes_text.click()
        await page.keyboard.press("Control+End")
        await page.keyboard.type(" and snacks")
        await until(lambda: str(settings["notes"]) == "bring water and snacks")
        todo.append("sunscreen")
        await tree.locator(".jr-value", has_text='"sunscreen"').wait_for()
        await tree.scroll_into_view_if_needed()
        await tree.screenshot(path=screenshots / "widget-tree.png")

        # A peer's color that is not a color shows as the default one, and loads nothing
        # (the page fails the test if it reaches beyond the machine).
        bob["state"].awareness.set_local_state(
            {"user": {"name": "eve", "color": "url(http://example.com/track.png)"}}
        )
        await tree.locator(".jr-peer", has_text="eve").wait_for()

    # A file's room, joined the way the README shows (the jupyter wire, in the kernel of
    # the server that serves the file): the page shows the file, and typing reaches the
    # room, then the file.
    todo = widget(page, "todo.txt")
    todo_editor = todo.locator("textarea.jr-editor")
    await todo_editor.wait_for()
    assert await todo_editor.input_value() == "water the plants\n"
    await todo_editor.click()
    await page.keyboard.press("Control+End")
    await page.keyboard.type("feed the cat")
    url = jupyterlab[0]
    async with connect("jupyter", id="todo.txt", url=f"{url}/", token=TOKEN) as reader:
        todo_source = reader.doc.get("source", type=Text)
        await until(lambda: str(todo_source) == "water the plants\nfeed the cat")
    todo_file = tmp_path / "root" / "todo.txt"
    await until(lambda: todo_file.read_text() == "water the plants\nfeed the cat", 15)

    # The kernel's client leaves the room: the widget says so and turns read-only, so
    # that nothing typed there goes where no one sees it.
    await run_new_cell(page, "await todo.stop()")
    await todo.locator(".jr-header[data-status='closed']").wait_for()
    await todo.locator(".jr-status", has_text="read-only").wait_for()
    assert not await todo_editor.is_editable()
    assert await todo_editor.input_value() == "water the plants\nfeed the cat"
