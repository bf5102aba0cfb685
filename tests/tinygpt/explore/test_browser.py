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
const at = +c.dataset.label, size = +c.dataset.cell * arguments[0];           // the map only, not the legend
const d = x.getImageData(at, at, size, size).data; let n = 0;
for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 150) n++;   // strongly attended cells
return n;"""
PIXEL = "const c = document.getElementById('att-canvas'); return Array.from(c.getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data);"


LEGEND = """
const c = document.getElementById('att-canvas'), x = c.getContext('2d');
const [lx, ly, lw, lh] = c.dataset.legend.split(',').map(Number);
const d = x.getImageData(lx, ly + lh / 2, lw, 1).data, row = [];
for (let i = 0; i < d.length; i += 4) row.push([d[i], d[i + 1], d[i + 2]]);
return row;"""


def check_colour_scale(browser):
    """The legend bar is the cells' colour scale from weight 0 (white) to 1 (blue, 0 85 255),
    changing linearly in between; returns it (one colour per pixel column)."""
    row = browser.execute_script(LEGEND)
    assert len(row) >= 100
    white, blue = [255, 255, 255], [0, 85, 255]
    assert row[0] == white and row[-1] == blue
    mid = len(row) // 2
    w = mid / (len(row) - 1)
    halfway = [a + (b - a) * w for a, b in zip(white, blue)]
    assert all(abs(got - want) <= 0.5 for got, want in zip(row[mid], halfway)), (row[mid], halfway)   # rounded
    reds = [r for r, _, _ in row]
    assert reds == sorted(reds, reverse=True)
    return row


def check_readout(browser, i, j, weights, slack=0):
    """Point at cell (i, j) of the heatmap: the readout names that query and key (within ``slack``
    cells: one-pixel cells meet the pointer's rounding) and exactly the weight of the cell it names."""
    canvas, wrap = browser.find_element(By.ID, "att-canvas"), browser.find_element(By.ID, "att-wrap")
    label = float(canvas.get_attribute("data-label"))
    cell = float(canvas.get_attribute("data-cell"))
    x, y = label + (j + 0.5) * cell, label + (i + 0.5) * cell        # canvas pixels (= CSS pixels here)
    # a long context's canvas scrolls inside #att-wrap: bring the cell into view, then point at it
    # relative to the wrapper's centre (where WebDriver offsets count from: floor of the midpoint)
    dx, dy = browser.execute_script("""
        const [c, w, x, y] = arguments;
        w.scrollIntoView({block: 'center'});
        w.scrollLeft = x - w.clientWidth / 2; w.scrollTop = y - w.clientHeight / 2;
        const r = c.getBoundingClientRect(), v = w.getBoundingClientRect();
        return [r.left + x - Math.floor((v.left + v.right) / 2), r.top + y - Math.floor((v.top + v.bottom) / 2)];""",
                                    canvas, wrap, x, y)
    ActionChains(browser).move_to_element_with_offset(wrap, round(dx), round(dy)).perform()
    text = wait_for(lambda: browser.find_element(By.ID, "att-cell").text, "the cell readout")
    got_i, got_j = int(text.split()[1]), int(text.split("→ token ")[1].split()[0])
    assert abs(got_i - i) <= slack and abs(got_j - j) <= slack, text
    assert got_j <= got_i and text.endswith(f"{100 * weights[got_i][got_j]:.2f}%")   # that cell's own weight


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
    assert browser.execute_script(COUNT_BLUE, len(expected)) > 0
    label = float(browser.find_element(By.ID, "att-canvas").get_attribute("data-label"))
    cell = float(browser.find_element(By.ID, "att-canvas").get_attribute("data-cell"))
    corner = browser.execute_script(PIXEL, int(label + (len(expected) - 0.5) * cell), int(label + 0.5 * cell))
    assert corner[:3] == [0xEC, 0xEE, 0xF2]
    # the colour scale under the map: the cells' own colours, white (0) to blue (1), left to right
    legend = check_colour_scale(browser)
    # a short prompt: every token labelled on both axes; pointing at a cell reads out its weight
    canvas = browser.find_element(By.ID, "att-canvas")
    assert (canvas.get_attribute("data-step"), canvas.get_attribute("data-labels")) == ("1", str(len(expected)))
    weights = explorer.attention({"text": prompt})["weights"]
    # a cell is painted the legend's colour at its weight (before any pointer is over the map).
    # The legend's columns are steps of 1/(columns - 1) in weight: the nearest one is at most half
    # a step away (255 / 2 / (columns - 1) in a channel), and each side rounds by up to 1/2.
    tol = 255 / 2 / (len(legend) - 1) + 1
    for i, j in ((0, 0), (len(expected) - 1, 2), (len(expected) - 1, len(expected) - 1)):
        pixel = browser.execute_script(PIXEL, int(label + (j + 0.5) * cell), int(label + (i + 0.5) * cell))[:3]
        nearest = legend[round(weights[i][j] * (len(legend) - 1))]
        assert all(abs(a - b) <= tol for a, b in zip(pixel, nearest)), (i, j, weights[i][j], pixel, nearest)
    check_readout(browser, len(expected) - 1, 2, weights)
    # hovering token k shades tokens 0..k by their weights and greys the future
    k = len(expected) // 2
    att_chips = browser.find_elements(By.CSS_SELECTOR, "#att-tokens .chip")
    ActionChains(browser).move_to_element(att_chips[k]).perform()
    wait_for(lambda: "rgba(47, 111, 219" in (att_chips[0].get_attribute("style") or ""), "shading on hover")
    assert "243" in att_chips[k + 1].get_attribute("style")         # #f3f3f3: not visible from token k

    # gradients: a loss, one saliency chip per token (the last one only a target, and the
    # caption says why), a table of norms
    wait_for(lambda: browser.find_element(By.ID, "grad-loss").text.startswith("loss L ="), "the backward pass")
    saliency = chips(browser, "saliency")
    assert [text for text, _ in saliency] == expected and saliency[-1][1] == "target"
    assert all(float(value) > 0 for _, value in saliency[:-1])
    note = browser.find_element(By.ID, "saliency-note").text
    assert "only a target" in note and "exactly 0" in note and f"tokens 1…{len(expected) - 1}" in note
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


def test_the_training_panel_reads_a_loss_that_is_null_as_a_dash(page_server, browser):
    """The server sends a loss that is not finite as null; drawTraining called toFixed on it and
    the panel showed a TypeError."""
    url, _ = page_server
    browser.get(url)
    wait_for(lambda: "parameters" in browser.find_element(By.ID, "model-info").text, "the model's description")
    status = browser.execute_script(
        "drawTraining({available: true, train: [[1, 3.5], [2, null]], eval: [[0, 3.6, 3.7], [2, 3.4, null]],"
        " lr: [[1, 0.001]]}); return document.getElementById('train-status').textContent;")
    assert status == "step 2: train loss –, last val loss –"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_characters_the_model_does_not_know_are_named_under_the_prompt(page_server, browser):
    """A character model's page had left unknown characters out of the chips without a word."""
    url, _ = page_server
    browser.get(url)
    wait_for(lambda: "parameters" in browser.find_element(By.ID, "model-info").text, "the model's description")
    box = browser.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys("ROMEO ☺")
    note = wait_for(lambda: "left out" in browser.find_element(By.ID, "prompt-note").text
                    and browser.find_element(By.ID, "prompt-note").text, "the note on left-out characters")
    assert note.endswith("not in the model's alphabet, left out: '☺'") and note.startswith("6 tokens")


# ---------------------------------------------------------------- a whole context of 1024 tokens

LONG_TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n"
             * 12)                                                       # 1188 characters: keeps the last 1024

LAYOUT = """
const measure = (t) => 6.6 * t.length;                                  // about ATT_FONT's monospace
const out = [];
for (const T of arguments[0]) {
  const names = Array.from({length: T}, (_, i) => 'tok' + (i % 97));
  const L = attentionLayout(T, names, measure);
  let exact = true;                                                      // every cell's centre maps back to it
  for (let i = 0; i < T && exact; i++) for (let j = 0; j < T; j++) {
    const at = cellAt(L, L.margin + (j + 0.5) * L.cell, L.margin + (i + 0.5) * L.cell);
    if (!at || at.i !== i || at.j !== j) { exact = false; break; }
  }
  const gaps = L.labels.slice(1).map((l, k) => (l.index - L.labels[k].index) * L.cell);
  out.push({T, cell: L.cell, step: L.step, labels: L.labels.length, first: L.labels[0].index,
            minGap: gaps.length ? Math.min(...gaps) : null, pitch: ATT_PITCH, exact,
            outside: cellAt(L, L.margin - 1, L.margin) === null && cellAt(L, L.margin + L.size, L.margin) === null});
}
return out;"""


@pytest.fixture(scope="module")
def long_server():
    """An untrained character model with GPT-2's context of 1024 positions (tiny otherwise)."""
    from tinygpt import GPTConfig
    from tinygpt.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.from_text(LONG_TEXT)
    model = GPT2(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=1024, n_layer=1, n_head=2, n_embd=16),
                 tokenizer=tokenizer)
    explorer = Explorer(model, source="untrained, context 1024")
    httpd = make_server(explorer, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", explorer
    httpd.shutdown()
    httpd.server_close()


def test_a_whole_context_thins_the_axis_labels_and_shows_every_tokens_saliency(long_server, browser, tmp_path):
    url, explorer = long_server
    browser.get(url)
    wait_for(lambda: "parameters" in browser.find_element(By.ID, "model-info").text, "the model's description")

    # the layout itself, at the full contexts of the char models and GPT-2: labels never closer
    # than the font allows, every cell found again from its own pixels
    for row in browser.execute_script(LAYOUT, [8, 32, 128, 1024]):
        assert row["exact"] and row["outside"], row
        assert row["step"] * row["cell"] >= row["pitch"] and row["first"] == 0, row
        assert row["labels"] == -(-row["T"] // row["step"]), row
        assert row["minGap"] is None or row["minGap"] >= row["pitch"], row
    rows = {row["T"]: row for row in browser.execute_script(LAYOUT, [8, 128, 1024])}
    assert rows[8]["step"] == 1 and rows[128]["step"] > 1 and rows[1024]["step"] > rows[128]["step"]

    # the page at 1024 tokens
    browser.execute_script("const p = document.getElementById('prompt'); p.value = arguments[0];"
                           "p.dispatchEvent(new Event('input'));", LONG_TEXT)
    T = 1024
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#att-tokens .chip")) == T, "the attention view", 120)
    canvas = browser.find_element(By.ID, "att-canvas")
    step, cell = int(canvas.get_attribute("data-step")), int(canvas.get_attribute("data-cell"))
    assert cell >= 1 and step > 1 and step * cell >= 14
    assert int(canvas.get_attribute("data-labels")) == -(-T // step)                  # only every step-th
    assert int(canvas.get_attribute("width")) >= float(canvas.get_attribute("data-label")) + T * cell
    assert browser.execute_script(COUNT_BLUE, T) > 0
    check_colour_scale(browser)
    weights = explorer.attention({"text": LONG_TEXT})["weights"]
    check_readout(browser, 700, 350, weights, slack=1)

    # saliency: all 1024 tokens, wrapped inside the panel, none cut off; the last only a target
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#saliency .chip")) == T, "1024 saliency chips", 120)
    inside = browser.execute_script("""
        const panel = document.getElementById('grad-panel').getBoundingClientRect();
        const chips = Array.from(document.querySelectorAll('#saliency .chip')).map((c) => c.getBoundingClientRect());
        return [chips.every((r) => r.left >= panel.left && r.right <= panel.right && r.width > 0),
                new Set(chips.map((r) => Math.round(r.top))).size];""")
    assert inside[0] and inside[1] > 10                                          # many lines, all in the panel
    assert chips(browser, "saliency")[-1][1] == "target"
    assert f"tokens 1…{T - 1} from tokens 0…{T - 2}" in browser.find_element(By.ID, "saliency-note").text

    browser.execute_script("document.getElementById('attention-panel').scrollIntoView();"
                           "const w = document.getElementById('att-wrap'); w.scrollLeft = 0; w.scrollTop = 0;")
    shot = tmp_path / "explorer-1024.png"
    assert browser.save_screenshot(str(shot))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
