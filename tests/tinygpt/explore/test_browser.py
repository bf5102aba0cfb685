"""The explorer page in a real headless Chromium (the system's browser and driver, driven by
selenium; nothing is downloaded): type a prompt, see the chips, the bars, the attention
heatmap and the gradients, hover, click a candidate, generate, and save a screenshot.

The screenshot goes to the test's temporary folder, and also to $TINYGPT_SCREENSHOT when that
is set; $TINYGPT_EXPLORE_CHECKPOINT points the page at another run (the README's picture is
taken this way from the run of `tinygpt train`).
"""
import os
import shutil
import threading
import time

import pytest

from tinygpt import GPT2
from tinygpt.explore import server as server_module
from tinygpt.explore.server import Explorer, find_log, make_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[browser]')")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(BROWSER is None or DRIVER is None,
                                reason="no Chromium and chromedriver on PATH (Debian/Ubuntu: apt install chromium "
                                       "chromium-driver)")


@pytest.fixture(scope="module")
def page_server(run_dir):
    checkpoint = os.environ.get("TINYGPT_EXPLORE_CHECKPOINT") or str(run_dir)
    explorer = Explorer(GPT2.load(checkpoint), source=os.path.basename(checkpoint.rstrip("/")),
                        log_path=find_log(checkpoint))
    httpd = make_server(explorer, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", explorer
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1640", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    except Exception as exc:  # a browser that cannot start here (no display libraries, ...)
        pytest.skip(f"Chromium did not start: {str(exc).splitlines()[0]}")
    yield driver
    driver.quit()


def wait_for(condition, what, timeout=30.0):
    """Poll ``condition()`` until it is truthy; fail naming ``what`` otherwise."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = condition()
        except StaleElementReferenceException:   # the page redrew the element meanwhile
            value = None
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def chips(driver, box):
    """[(token text, id line)] of the chips in #box, read in one go (the page redraws them)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map("
        "c => [c.querySelector('.t').textContent, c.querySelector('.id').textContent]);", f"#{box} .chip")


def chip_texts(driver, box):
    return [text for text, _ in chips(driver, box)]


def shown(text):
    return text.replace(" ", "\u2423").replace("\n", "\u21b5")


COUNT_BLUE = """
const c = document.getElementById('att-canvas'), x = c.getContext('2d');
const d = x.getImageData(0, 0, c.width, c.height).data; let n = 0;
for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 150) n++;   // strongly attended cells
return n;"""
PIXEL = "const c = document.getElementById('att-canvas'); return Array.from(c.getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data);"


def test_the_page_works_in_a_real_browser(page_server, browser, tmp_path, monkeypatch):
    url, explorer = page_server
    tok = explorer.model.tokenizer
    browser.get(url)
    wait_for(lambda: "parameters" in browser.find_element(By.ID, "model-info").text, "the model's description")

    prompt = "ROMEO: But soft"
    box = browser.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    expected = [shown(tok.token_str(i)) for i in tok.encode(prompt)]
    wait_for(lambda: chip_texts(browser, "tokens") == expected, "one token chip per token")
    ids = [i for _, i in chips(browser, "tokens")]
    assert ids == [str(i) for i in tok.encode(prompt)]

    # next token: bars drawn for the model's probabilities
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#candidates .cand")) == 15, "15 candidates")
    widths = [float(b.get_attribute("style").split("width:")[1].split("%")[0])
              for b in browser.find_elements(By.CSS_SELECTOR, "#candidates .bars .before")]
    assert widths[0] > 0 and widths == sorted(widths, reverse=True)

    # attention: the heatmap is drawn, the future (top-right corner) is the masked grey
    wait_for(lambda: len(chip_texts(browser, "att-tokens")) == len(expected), "the attention view's tokens")
    assert browser.execute_script(COUNT_BLUE) > 0
    label = float(browser.find_element(By.ID, "att-canvas").get_attribute("data-label"))
    cell = float(browser.find_element(By.ID, "att-canvas").get_attribute("data-cell"))
    corner = browser.execute_script(PIXEL, int(label + (len(expected) - 0.5) * cell), int(label + 0.5 * cell))
    assert corner[:3] == [0xEC, 0xEE, 0xF2]
    # hovering token k shades tokens 0..k by their weights and greys the future
    k = len(expected) // 2
    att_chips = browser.find_elements(By.CSS_SELECTOR, "#att-tokens .chip")
    ActionChains(browser).move_to_element(att_chips[k]).perform()
    wait_for(lambda: "rgba(47, 111, 219" in (att_chips[0].get_attribute("style") or ""), "shading on hover")
    assert "243" in att_chips[k + 1].get_attribute("style")         # #f3f3f3: not visible from token k

    # gradients: a loss, one saliency chip per input token, a table of norms
    wait_for(lambda: browser.find_element(By.ID, "grad-loss").text.startswith("loss L ="), "the backward pass")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#saliency .chip")) == len(expected) - 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grad-table tr")) == explorer.model.config.n_layer + 3

    # training: curves of the run's log
    wait_for(lambda: browser.find_element(By.ID, "train-status").text.startswith("step "), "the training curves")

    # clicking a candidate appends it to the prompt
    first = browser.find_element(By.CSS_SELECTOR, "#candidates .cand .tok")
    wanted = prompt + first.text.replace("\u2423", " ").replace("\u21b5", "\n")
    first.click()
    wait_for(lambda: box.get_attribute("value") == wanted, "the prompt to grow by the clicked token")
    wait_for(lambda: len(chip_texts(browser, "tokens")) == len(tok.encode(wanted)), "chips of the longer prompt")

    # generate streams tokens into the prompt
    count = browser.find_element(By.ID, "max-new")
    count.clear()
    count.send_keys("8")
    browser.find_element(By.ID, "generate").click()
    wait_for(lambda: "sampled" in browser.find_element(By.ID, "gen-status").text, "generation to finish")
    assert len(box.get_attribute("value")) > len(wanted)

    # a long generation is stopped by Stop, and the page goes on working. The tiny model samples
    # 500 tokens in well under a second; paced like GPT-2 124M on a CPU (~20 ms a token), Stop
    # has time to act.
    fast = server_module.generate_ids

    def paced(*args, **kwargs):
        for token in fast(*args, **kwargs):
            time.sleep(0.02)
            yield token
    monkeypatch.setattr(server_module, "generate_ids", paced)
    count.clear()
    count.send_keys("500")
    browser.find_element(By.ID, "generate").click()
    wait_for(lambda: browser.find_element(By.ID, "gen-status").text.startswith(("1", "2", "3", "4", "5", "6", "7",
                                                                              "8", "9")), "the first tokens")
    browser.find_element(By.ID, "stop").click()
    status = wait_for(lambda: (t := browser.find_element(By.ID, "gen-status").text).startswith("stopped after") and t,
                      "the Stop button to end sampling")
    assert int(status.split()[2]) < 500
    assert browser.find_element(By.ID, "generate").is_enabled()
    monkeypatch.undo()

    # put the page back on the typed prompt for the picture, then take it
    box.clear()
    box.send_keys(prompt)
    wait_for(lambda: chip_texts(browser, "tokens") == expected, "the prompt's chips again")
    wait_for(lambda: browser.find_element(By.ID, "grad-loss").text.startswith("loss L ="), "the gradients again")
    time.sleep(0.5)
    ActionChains(browser).move_to_element(browser.find_elements(By.CSS_SELECTOR, "#att-tokens .chip")[-1]).perform()
    shot = tmp_path / "explorer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("TINYGPT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["TINYGPT_SCREENSHOT"])

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
