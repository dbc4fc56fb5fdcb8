"""The web UI in a real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium): load the page, send a message and see the streamed reply appear, stop a reply, find
the conversation again after a reload, give an API key when the server asks for one, and pick a
model in router mode. The screenshot taken mid-conversation is docs/webui.png (shown in the
README)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerHandle, start_server
from frontend_support import FakeScheduler, frontend_config, run_frontend
from mmproj_models import png, tiny_vision_mmproj
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from ggserve.models.resolve import resolve_model


SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "webui.png"
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
DRIVER = shutil.which("chromedriver")
WAIT_S = 120  # generation shares two cores with the browser

pytestmark = pytest.mark.skipif(
    BROWSER is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    except WebDriverException as exc:  # installed but cannot start here
        pytest.skip(f"chromium cannot start: {exc.msg}")
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: webdriver.Chrome, condition, timeout_s: float = WAIT_S):
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda d: condition(d))


def assistant_messages(driver: webdriver.Chrome) -> list:
    return driver.find_elements(By.CSS_SELECTOR, ".message.assistant")


def send(driver: webdriver.Chrome, text: str) -> None:
    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def set_settings(driver: webdriver.Chrome, **values: str) -> None:
    driver.find_element(By.ID, "open-settings").click()
    for field, value in values.items():
        element = driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#settings button[value=close]").click()


def test_chat_streams_a_reply_and_stops_one(server: ServerHandle, browser: webdriver.Chrome) -> None:
    browser.get(f"{server.base_url}/")
    wait(browser, lambda d: d.find_element(By.ID, "model-name").text == "gemma-3-270m-q4_k_m.gguf")
    assert not browser.find_element(By.ID, "model-picker").is_displayed()  # one model: no picker
    set_settings(browser, **{"system-prompt": "You are a helpful assistant.", "temperature": "0", "max_tokens": "24"})

    send(browser, "Write a short poem about the sea.")
    wait(browser, lambda d: "tokens/s" in d.find_element(By.CSS_SELECTOR, ".message.assistant .meta").text)
    (reply,) = assistant_messages(browser)
    assert reply.find_element(By.CSS_SELECTOR, ".content").text.strip()  # the streamed text is shown
    assert browser.find_element(By.ID, "send").is_displayed()

    set_settings(browser, max_tokens="300")  # long enough to be stopped mid-reply
    send(browser, "Now explain, with a code example in Python, how to read a file.")
    stop = browser.find_element(By.ID, "stop")
    wait(browser, lambda d: stop.is_displayed() and len(assistant_messages(d)) == 2
         and len(assistant_messages(d)[1].find_element(By.CSS_SELECTOR, ".content").text) > 40)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))  # mid-reply: the Stop button is showing
    stop.click()
    wait(browser, lambda d: "stopped" in assistant_messages(d)[1].find_element(By.CSS_SELECTOR, ".meta").text)
    assert browser.find_element(By.ID, "send").is_displayed() and not stop.is_displayed()

    # The server aborted the stopped request: its slot is free again.
    deadline = time.monotonic() + 10
    while any(s["is_processing"] for s in httpx.get(f"{server.base_url}/slots", timeout=10).json()):
        assert time.monotonic() < deadline, "the stopped reply kept its slot"
        time.sleep(0.1)

    # The conversation is kept in the browser and comes back after a reload.
    stored = json.loads(browser.execute_script("return localStorage.getItem('ggserve.conversations')"))
    assert [m["role"] for m in stored[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert stored[0]["messages"][3]["stopped"] is True
    browser.refresh()
    wait(browser, lambda d: len(assistant_messages(d)) == 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#conversations li")) == 1


def test_asks_for_the_api_key_when_the_server_needs_one(tmp_path, browser: webdriver.Chrome) -> None:
    cfg = frontend_config(str(tmp_path), api_keys=["browser-key"])
    reply = [200, 201, 202]  # any token ids: the fake engine streams them back
    with FakeScheduler(cfg.scheduler_endpoint, reply), run_frontend(cfg) as url:
        browser.get(f"{url}/")
        dialog = browser.find_element(By.ID, "api-key-dialog")
        wait(browser, lambda d: dialog.is_displayed(), timeout_s=30)
        browser.find_element(By.ID, "api-key").send_keys("browser-key")
        browser.find_element(By.ID, "save-key").click()
        wait(browser, lambda d: d.find_element(By.ID, "model-name").text == cfg.model_alias, timeout_s=30)
        send(browser, "hello")
        wait(browser, lambda d: "tokens" in d.find_element(By.CSS_SELECTOR, ".message.assistant .meta").text,
             timeout_s=30)
        assert browser.execute_script("return localStorage.getItem('ggserve.apiKey')") == "browser-key"


@pytest.mark.parametrize("page", ["/api/", "/api"])
def test_the_page_works_under_the_api_prefix(tmp_path, browser: webdriver.Chrome, page: str) -> None:
    """--api-prefix: the page's files and the API calls it makes are under the prefix too."""
    cfg = frontend_config(str(tmp_path), api_prefix="/api")
    with FakeScheduler(cfg.scheduler_endpoint, [200, 201, 202]), run_frontend(cfg) as url:
        browser.get(f"{url}{page}")
        wait(browser, lambda d: d.find_element(By.ID, "model-name").text == cfg.model_alias, timeout_s=30)
        assert browser.execute_script("return getComputedStyle(document.body).margin") == "0px"  # styled
        send(browser, "hello")
        wait(browser, lambda d: "tokens" in d.find_element(By.CSS_SELECTOR, ".message.assistant .meta").text,
             timeout_s=30)


def test_the_servers_ui_config_fills_the_settings_this_browser_has_not_set(tmp_path, browser) -> None:
    ui = {"systemMessage": "Be brief.", "temperature": 0.1, "theme": "dark"}
    cfg = frontend_config(str(tmp_path), ui_settings=json.dumps(ui))
    with FakeScheduler(cfg.scheduler_endpoint, [200]), run_frontend(cfg) as url:
        assert httpx.get(f"{url}/props", timeout=10).json()["ui_settings"] == ui  # llama-server's UIs read it
        browser.get(f"{url}/")
        wait(browser, lambda d: d.find_element(By.ID, "model-name").text == cfg.model_alias, timeout_s=30)
        browser.find_element(By.ID, "open-settings").click()
        wait(browser, lambda d: d.find_element(By.ID, "system-prompt").get_attribute("value") == "Be brief.",
             timeout_s=30)
        assert browser.find_element(By.ID, "temperature").get_attribute("value") == "0.1"
        browser.find_element(By.ID, "temperature").clear()
        browser.find_element(By.ID, "temperature").send_keys("0.7")  # the user's own value wins after this
        browser.find_element(By.CSS_SELECTOR, "#settings button[value=close]").click()
        browser.refresh()
        wait(browser, lambda d: d.find_element(By.ID, "model-name").text == cfg.model_alias, timeout_s=30)
        browser.find_element(By.ID, "open-settings").click()
        assert browser.find_element(By.ID, "temperature").get_attribute("value") == "0.7"


MARKDOWN_REPLY = """# Reading a file

Use **`open`** with a *context manager*:

```python
with open("notes.txt") as f:
    print(f.read())
```

1. open it
2. read it

<img src=x onerror="document.title='pwned'"> [docs](https://docs.python.org) [bad](javascript:alert(1))"""


def test_replies_render_as_markdown_and_html_stays_text(tmp_path, browser: webdriver.Chrome) -> None:
    cfg = frontend_config(str(tmp_path))
    with FakeScheduler(cfg.scheduler_endpoint, [200]), run_frontend(cfg) as url:
        browser.get(f"{url}/")
        stored = [{"id": "c1", "title": "markdown", "messages": [
            {"role": "user", "content": "<b>not bold</b>"}, {"role": "assistant", "content": MARKDOWN_REPLY}]}]
        browser.execute_script("localStorage.setItem('ggserve.conversations', arguments[0]);"
                               "localStorage.setItem('ggserve.current', 'c1');", json.dumps(stored))
        browser.refresh()
        reply = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".message.assistant .content"), timeout_s=30)
        assert reply.find_element(By.TAG_NAME, "h1").text == "Reading a file"
        assert reply.find_element(By.CSS_SELECTOR, "strong code").text == "open"
        assert reply.find_element(By.TAG_NAME, "em").text == "context manager"
        code = reply.find_element(By.CSS_SELECTOR, ".code-block")
        assert code.find_element(By.CSS_SELECTOR, ".code-bar span").text == "python"
        assert code.find_element(By.TAG_NAME, "pre").text == 'with open("notes.txt") as f:\n    print(f.read())'
        assert [li.text for li in reply.find_elements(By.CSS_SELECTOR, "ol li")] == ["open it", "read it"]
        links = reply.find_elements(By.TAG_NAME, "a")
        assert [a.get_attribute("href") for a in links] == ["https://docs.python.org/"]  # no javascript: link
        assert not reply.find_elements(By.TAG_NAME, "img") and "<img src=x" in reply.text  # HTML is shown as text
        assert browser.title == "ggserve"
        user = browser.find_element(By.CSS_SELECTOR, ".message.user .content")
        assert user.text == "<b>not bold</b>" and not user.find_elements(By.TAG_NAME, "b")


def picker_options(driver: webdriver.Chrome) -> list[str]:
    return [o.text for o in Select(driver.find_element(By.ID, "model-picker")).options]


def test_router_mode_picks_the_model_and_shows_its_status(tmp_path, browser: webdriver.Chrome) -> None:
    for name in ("alpha", "beta"):
        (tmp_path / f"{name}.gguf").symlink_to(resolve_model(None))
    with start_server("--models-dir", str(tmp_path), "-c", "512", "-np", "1", "-t", "1", base_args=()) as server:
        browser.get(f"{server.base_url}/")
        wait(browser, lambda d: picker_options(d) == ["alpha (unloaded)", "beta (unloaded)"], timeout_s=30)
        assert not browser.find_element(By.ID, "model-name").is_displayed()
        Select(browser.find_element(By.ID, "model-picker")).select_by_value("beta")
        set_settings(browser, temperature="0", max_tokens="8")
        send(browser, "Hello")  # beta is not loaded: the request loads it
        wait(browser, lambda d: "tokens" in d.find_element(By.CSS_SELECTOR, ".message.assistant .meta").text)
        assert browser.find_element(By.CSS_SELECTOR, ".message.assistant .role").text == "beta"
        models = {m["id"]: m["status"]["value"] for m in httpx.get(f"{server.base_url}/v1/models").json()["data"]}
        assert models == {"alpha": "unloaded", "beta": "loaded"}  # the request named beta
        wait(browser, lambda d: picker_options(d) == ["alpha (unloaded)", "beta (loaded)"], timeout_s=30)
        # The choice is kept: after a reload beta is still the model.
        browser.refresh()
        wait(browser, lambda d: Select(d.find_element(By.ID, "model-picker")).first_selected_option.text
             == "beta (loaded)", timeout_s=30)

def test_an_image_is_attached_when_the_server_has_a_projector(tmp_path, browser: webdriver.Chrome) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(png(40, 30))
    with start_server("-np", "1", "-c", "1024", "--mmproj", tiny_vision_mmproj()) as server:
        browser.get(f"{server.base_url}/")
        attach = browser.find_element(By.ID, "attach-button")
        wait(browser, lambda d: attach.is_displayed())
        set_settings(browser, temperature="0", max_tokens="4")
        browser.find_element(By.ID, "attach").send_keys(str(picture))
        wait(browser, lambda d: d.find_element(By.ID, "attached").text == "1 image")
        send(browser, "What is in this picture?")
        wait(browser, lambda d: "tokens" in d.find_element(By.CSS_SELECTOR, ".message.assistant .meta").text)
        shown = browser.find_element(By.CSS_SELECTOR, ".message.user img.attachment")
        assert shown.get_attribute("src").startswith("data:image/png;base64,")
        assert not browser.find_element(By.CSS_SELECTOR, ".message.assistant .meta").get_attribute(
            "class").endswith("error")
        assert browser.find_element(By.ID, "attached").text == ""
    with start_server("-np", "1", "-c", "512") as plain:  # no projector: no button
        browser.get(f"{plain.base_url}/")
        wait(browser, lambda d: d.find_element(By.ID, "model-name").text == "gemma-3-270m-q4_k_m.gguf")
        assert not browser.find_element(By.ID, "attach-button").is_displayed()
