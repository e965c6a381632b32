"""examples/web in a real browser: headless Chromium (Debian's chromium + chromedriver, `make chromium`)
loads the page from a local server on 127.0.0.1; its greedy tokens equal fastattn.runtime's for the int8
export of the demo decoder (token-id prompt) and for a trained byte-level LM (text prompt through the
export's tokenizer.json). A screenshot goes to build/web_page.png. A missing browser fails: install it."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

import fastattn.runtime as rt
from fastattn.exporter.pipeline import ExportOptions, export
from fastattn.models import LayerAttention, ModelConfig, build, save
from fastattn.models.presets import preset
from fastattn.quantize import Mode, QuantOptions
from fastattn.quantize.gates import Gate
from fastattn.quantize.step import QuantizeStep
from fastattn.runtime.tokenizer import load_tokenizer

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extras: pip install -e '.[test]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).parents[2]
RANDOM_UNTIED = ModelConfig(
    name="web-random-untied", vocab_size=64, d_model=32, num_heads=4, kv_heads=2, ffn_dim=64, tie_embeddings=False,
    decoder_layers=(LayerAttention.parse("sliding:8"), LayerAttention()),
)  # fmt: skip
PAGE = ROOT / "examples" / "web"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1000,900")  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A copy of examples/web with its locked onnxruntime-web installed (the repo tree stays clean)."""
    app = tmp_path_factory.mktemp("web") / "site"
    app.mkdir()
    for name in ("index.html", "app.mjs", "package.json", "package-lock.json"):
        shutil.copy2(PAGE / name, app / name)
    run = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=app,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, f"npm ci of examples/web failed: {run.stderr[-2000:]}"
    return app


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}  # fmt: skip

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Chromium is missing: run `make chromium` (apt: chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _serve_model(site: Path, export_dir: Path, name: str) -> str:
    shutil.copytree(export_dir, site / name)
    return f"{name}/"


def _generate_in_page(browser, url: str, prompt: str, new: int) -> tuple[list[int], str]:
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") in ("1", "error"))
    status = browser.find_element(By.ID, "status").text
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", status
    box = browser.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    count = browser.find_element(By.ID, "max-new")
    count.clear()
    count.send_keys(str(new))
    browser.find_element(By.ID, "run").click()
    output = browser.find_element(By.ID, "output")
    wait.until(lambda d: output.get_attribute("data-done") == "1")
    assert "error" not in browser.find_element(By.ID, "status").text, browser.find_element(By.ID, "status").text
    return json.loads(output.get_attribute("data-tokens")), output.get_attribute("textContent")


@pytest.fixture(scope="module")
def demo_int8(tmp_path_factory) -> Path:
    """`fastattn create default` exported with --quantize int8, as `make demo` would."""
    root = tmp_path_factory.mktemp("demo")
    ckpt = save(build(preset("default"), seed=0), root / "model.pt")
    options = ExportOptions(root / "out-int8", quantize=QuantizeStep(QuantOptions(Mode.INT8)), repeats=3)
    return export(ckpt, options).output  # repeats: fewer timed runs per lowering candidate (test time)


def test_page_streams_the_runtime_greedy_tokens_int8_demo(browser, server, site, demo_int8):
    prompt = [100, 101, 102, 32, 109, 97, 105, 110, 40]
    model = _serve_model(site, demo_int8, "demo-int8")
    tokens, text = _generate_in_page(browser, f"{server}/index.html?model={model}", ", ".join(map(str, prompt)), 32)
    assert rt.load(demo_int8).manifest.precision == "int8"
    assert tokens == rt.load(demo_int8).generate(prompt, max_new_tokens=32).tokens[0]
    assert len(tokens) == 32 and " ".join(map(str, tokens)) in text  # streamed into the page as ids
    tps = browser.find_element(By.ID, "tps").text
    assert float(tps) > 0 and browser.find_element(By.ID, "ort-version").text == "1.30.0"
    shot = ROOT / "build" / "web_page.png"
    shot.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_page_varied_tokens_random_untied_int8(browser, server, site, tmp_path_factory):
    """The demo's tied random head repeats the last token; untied random weights make the check bite."""
    root = tmp_path_factory.mktemp("untied")
    ckpt = save(build(RANDOM_UNTIED, seed=2), root / "random.pt")
    lenient = Gate(max_ppl_increase=1.0, min_cosine=0.0, max_accuracy_drop=1.0)  # random weights: no task gate
    out = export(ckpt, ExportOptions(root / "int8", quantize=QuantizeStep(QuantOptions(Mode.INT8), gate=lenient))).output
    prompt = [3, 14, 15, 9, 26, 5, 35, 8]
    model = _serve_model(site, out, "untied-int8")
    tokens, _ = _generate_in_page(browser, f"{server}/index.html?model={model}", ",".join(map(str, prompt)), 40)
    want = rt.load(out).generate(prompt, max_new_tokens=40).tokens[0]
    assert tokens == want and len(set(want)) > 5


def test_page_tokenizes_text_with_the_exports_tokenizer(browser, server, site, trained_lm, tmp_path_factory):
    out = export(trained_lm, ExportOptions(tmp_path_factory.mktemp("lm") / "lm")).output
    tokenizer = load_tokenizer(out)
    assert tokenizer is not None
    model = _serve_model(site, out, "lm")
    text = "import os\ndef f("
    tokens, shown = _generate_in_page(browser, f"{server}/index.html?model={model}", text, 24)
    assert tokens == rt.load(out).generate(tokenizer.encode(text), max_new_tokens=24).tokens[0]
    assert shown == text + tokenizer.decode(tokens)  # the prompt, then the streamed text


def test_page_says_what_is_missing(browser, server):
    browser.get(f"{server}/index.html?model=nowhere/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "error")
    assert "no fastattn.json at" in browser.find_element(By.ID, "status").text
