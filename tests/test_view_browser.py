"""The run view page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, which `.ci/run` installs) through selenium. No console error, the hostile model
text stays text, the filters work, and a screenshot is taken."""

import os
import shutil

import pytest

from fixtures.hostile_dump import SCRIPT, write_hostile_dump
from recipe_tapo.view.__main__ import main

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Chromium is not installed: apt-get install -y chromium chromium-driver (.ci/run does)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")

TESTS = os.path.dirname(__file__)
FIXTURE_RUN = os.path.join(TESTS, "fixtures", "view_run")
TOY_TOKENIZER = os.path.join(os.path.dirname(TESTS), "recipe_tapo", "toy", "cold_start_model")
WINDOW = (1280, 1800)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The fixture run plus a dump of hostile text, as a page with the per-token view."""
    work = tmp_path_factory.mktemp("browser_page")
    run = work / "run"
    shutil.copytree(FIXTURE_RUN, run)
    write_hostile_dump(run / "tapo_dump" / "step_000004.jsonl")
    out = work / "report.html"
    main([str(run), "-o", str(out), "--tokenizer", TOY_TOKENIZER, "--max-text-chars", "2000"])
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium_profile")  # a new, empty profile: no state from elsewhere
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def problems(driver):
    """Console messages of error or warning level (CSP violations and script errors among them)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def visible_records(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('details.record')).filter(r => !r.hidden).length")


def test_the_page_loads_without_console_errors_and_the_hostile_text_stays_text(browser, page, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    assert problems(browser) == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.execute_script("return window.__hostile") is None
    assert browser.execute_script("return document.scripts.length") == 1
    assert browser.execute_script("return document.querySelector('img.panels').naturalWidth") == 1500

    hostile = browser.find_elements(By.CSS_SELECTOR, 'details.record[data-step="4"]')[0]
    hostile.find_element(By.TAG_NAME, "summary").click()
    questions = hostile.find_elements(By.CSS_SELECTOR, "pre.text")
    assert questions[0].text == SCRIPT  # rendered as the characters the model wrote
    assert problems(browser) == []

    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    with open(shot, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000


def test_the_filters_hide_and_show_records(browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    count = browser.find_element(By.ID, "filter-count")
    assert visible_records(browser) == 12 and count.text == "12 of 12 attempts shown"
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("ok")
    assert visible_records(browser) == 7 and count.text == "7 of 12 attempts shown"
    browser.find_element(By.ID, "filter-reward-min").send_keys("1")
    assert visible_records(browser) == 5  # the right constructions: steps 2, 3 and the hostile one
    Select(browser.find_element(By.ID, "filter-step")).select_by_value("3")
    assert visible_records(browser) == 2
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-step")).select_by_value("")
    browser.find_element(By.ID, "filter-reward-min").clear()
    browser.find_element(By.ID, "filter-unscored").click()
    assert visible_records(browser) == 7  # the unscored attempts hidden
    browser.find_element(By.ID, "expand-all").click()
    assert browser.execute_script(
        "return Array.from(document.querySelectorAll('details.record')).filter(r => r.open).length") == 7
    assert problems(browser) == []
