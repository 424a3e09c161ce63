"""The drawing page in a real Chromium: draw real MNIST digits with the mouse, read the guess.

A real ``mnistkit serve`` runs on 127.0.0.1; Playwright drives Debian's Chromium headless
(Playwright cannot download its own browser here). The strokes are traced from MNIST test
images of known label: each horizontal run of ink pixels becomes one mouse drag, scaled onto
the canvas. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from serve_support import ARTIFACTS, running_server, trained_run

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("MNISTKIT_CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.mnist,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

# MNIST test images 0, 1, 3: a 7, a 2 and a 0.
DIGITS = [0, 1, 3]
# Written as a number: 7, 2, 1.
NUMBER = [0, 1, 2]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def server(run):
    with running_server(run) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


def ink_runs(image: np.ndarray, threshold: int = 128) -> list[tuple[int, int, int]]:
    """Horizontal runs of ink in a 28x28 image: (row, first column, last column)."""
    runs = []
    for y, row in enumerate(image >= threshold):
        x = 0
        while x < row.size:
            if row[x]:
                start = x
                while x + 1 < row.size and row[x + 1]:
                    x += 1
                runs.append((y, start, x))
            x += 1
    return runs


def draw(page, image: np.ndarray, slot: int = 0) -> int:
    """Trace the ink of a 28x28 image onto the canvas with mouse drags, as high as the pad, in
    the ``slot``-th square from the left (squares 20/28 of the pad's height apart: a digit of
    MNIST's 20x20 box a few pixels from the next); returns the strokes."""
    box = page.locator("#pad").bounding_box()
    cell = min(box["width"], box["height"]) / 28

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + (x + 0.5 + 20 * slot) * cell, box["y"] + (y + 0.5) * cell

    runs = ink_runs(image)
    for y, x0, x1 in runs:
        page.mouse.move(*at(x0, y))
        page.mouse.down()
        page.mouse.move(*at(x1, y), steps=max(2, x1 - x0))
        page.mouse.up()
    return len(runs)


def wait_for_answer(page, strokes: int) -> str:
    """The label shown once the page has the answer for the drawing with that many strokes."""
    page.wait_for_selector(f'#result[data-state="done"][data-strokes="{strokes}"]', timeout=60_000)
    return page.locator("#label").inner_text().strip()


def test_drawn_digits_are_recognized(server, run, browser, mnist):
    _, (x_test, y_test) = mnist
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server + "/")
    recipe = json.loads((run / "metrics.json").read_text())["recipe"]
    page.wait_for_selector(f'#model:has-text("{recipe}")')  # the page read /api/health
    assert page.locator("#label").inner_text().strip() == "?"

    for i in DIGITS:
        label = int(y_test[i])
        strokes = draw(page, x_test[i])
        assert wait_for_answer(page, strokes) == str(label), f"MNIST test image {i}"
        # The bars: three guesses with percentages, the first one the label shown.
        first = page.locator("#top li").first
        assert first.locator(".bar-label").inner_text() == str(label)
        assert first.locator(".pct").inner_text().endswith("%")
        page.screenshot(path=str(ARTIFACTS / f"browser-desktop-digit-{label}.png"))
        # Keyboard: U undoes the last stroke, C clears the pad.
        page.keyboard.press("u")
        page.wait_for_selector(f'#result[data-state="done"][data-strokes="{strokes - 1}"]')
        page.keyboard.press("c")
        page.wait_for_selector('#result[data-state="idle"]')
        assert page.locator("#label").inner_text().strip() == "?"
    assert not errors, errors
    page.close()


def test_drawn_number_is_read(server, browser, mnist):
    """Three MNIST test digits written side by side: the page shows the number, a box around
    each digit with its probability, and each digit's 28x28 image."""
    _, (x_test, y_test) = mnist
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] > 1.8 * pad["height"]  # a wide pad on a desktop
    strokes = sum(draw(page, x_test[i], slot) for slot, i in enumerate(NUMBER))
    number = "".join(str(int(y_test[i])) for i in NUMBER)
    assert wait_for_answer(page, strokes) == number
    assert page.locator("#boxes .box").count() == 3
    assert page.locator("#digits li canvas").count() == 3
    tags = page.locator("#boxes .box span").all_inner_texts()
    assert [t.split()[0] for t in tags] == list(number) and all(t.endswith("%") for t in tags)
    assert not page.locator("#top").is_visible()  # the top guesses are for a single digit
    page.screenshot(path=str(ARTIFACTS / "browser-desktop-number.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_phone_layout_with_buttons(server, browser, mnist):
    """A phone-sized touch screen: the pad fits the width, the buttons work, a digit reads."""
    _, (x_test, y_test) = mnist
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        has_touch=True,
        is_mobile=True,
    )
    page = ctx.new_page()
    page.goto(server + "/")
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] > 300 and pad["x"] >= 0 and pad["x"] + pad["width"] <= 390
    assert page.locator("#clear").is_disabled()
    strokes = draw(page, x_test[0])
    assert wait_for_answer(page, strokes) == str(int(y_test[0]))
    page.screenshot(path=str(ARTIFACTS / "browser-phone.png"), full_page=True)
    page.locator("#clear").click()
    page.wait_for_selector('#result[data-state="idle"]')
    ctx.close()


def test_not_a_digit_note(server, browser):
    """When the server flags the input, the page says so (the answer is stubbed: whether a
    given scribble is flagged depends on the model, how the page shows it does not)."""
    answer = {
        "number": "1",
        "digits": [
            {
                "label": 1,
                "p": 0.31,
                "bbox": [100, 40, 140, 240],
                "input28": [[0.0] * 28 for _ in range(28)],
            }
        ],
        "label": 1,
        "probabilities": [0.02, 0.31, 0.29] + [0.38 / 7] * 7,
        "top": [{"label": 1, "p": 0.31}, {"label": 2, "p": 0.29}, {"label": 0, "p": 0.02}],
        "input28": [[0.0] * 28 for _ in range(28)],
        "not_digit": "low confidence: top probability 0.31 < 0.5",
    }
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.route("**/api/predict", lambda route: route.fulfill(json=answer))
    page.goto(server + "/")
    assert not page.locator("#note").is_visible()
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 0.2 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.5 * box["height"], steps=8)
    page.mouse.up()
    assert wait_for_answer(page, 1) == "1"
    assert page.locator("#note").is_visible()
    assert "not a digit" in page.locator("#note").inner_text()
    page.screenshot(path=str(ARTIFACTS / "browser-not-a-digit.png"))
    page.close()
