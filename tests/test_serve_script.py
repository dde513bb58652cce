"""scripts/serve.py as a user runs it: without the serve extra it says how to install it; it listens on 127.0.0.1 and
says so; a port in use is one line; the page translates and draws its heatmaps in a real headless browser; the load
test runs against it. The browser test skips (saying why) without selenium, chromium or chromedriver."""

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from helpers import ROOT, free_port, run_script, script_env
from test_end_to_end import SENTENCES

SERVE = str(ROOT / "scripts" / "serve.py")
CAT = "The cat sat on the mat."


def test_without_the_serve_extra_serve_py_says_how_to_install_it(tmp_path):
    for name in ("fastapi", "uvicorn"):  # packages that fail to import, first on the path: as if not installed
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('not installed', name={name!r})\n")
    env = {**script_env(), "PYTHONPATH": f"{tmp_path}:{script_env()['PYTHONPATH']}"}
    result = subprocess.run([sys.executable, SERVE, "--checkpoint", "x"], env=env, capture_output=True, text=True)
    assert result.returncode == 2  # after importing the package: it needs neither
    install = 'pip install "mini-transformer[serve]"'  # the same for a clone's editable install and a wheel
    assert result.stderr == f"error: serving needs the serve extra (uvicorn is missing): {install}\n"


@pytest.fixture(scope="module")
def server(request):
    pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
    pytest.importorskip("uvicorn", reason='needs the serve extra: pip install -e ".[serve]"')
    demo_run = request.getfixturevalue("demo_run")  # only now: a skip trains nothing
    port = free_port()
    process = subprocess.Popen([sys.executable, SERVE, "--checkpoint", str(demo_run), "--port", str(port)],
                               stderr=subprocess.PIPE, text=True, env=script_env())  # fmt: skip
    try:
        first_line = process.stderr.readline()  # said once the model is loaded, before serving
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            assert process.poll() is None, first_line + process.stderr.read()
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as response:
                    assert json.loads(response.read()) == {"status": "ok"}
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"{url}/health never answered")
        yield url, port, first_line
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_it_listens_on_localhost_only_and_says_so(server, demo_run):
    url, port, first_line = server
    assert first_line == f"serving {demo_run} on {url} (local only; --host 0.0.0.0 to expose it)\n"
    taken = run_script("serve.py", "--checkpoint", str(demo_run), "--port", str(port))
    assert taken.returncode == 2
    assert taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and taken.stderr.count("\n") == 1


def test_the_load_test_runs_against_it(server):
    result = run_script("load_test.py", "--url", server[0], "--clients", "2", "--seconds", "1")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines()[1:] if line.strip())
    assert int(lines["requests"].split()[0]) > 0 and lines["errors"] == "0"
    assert {"sentences", "latency", "batching", "server"} <= set(lines)


def browser():
    """Headless chromium through selenium, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason='needs selenium: pip install -e ".[test]"')
    from selenium.webdriver.chrome.service import Service

    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("needs chromium and chromedriver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,2000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


# What a heatmap shows, read in one call: [query, key, weight, fill] of each cell; the labels of one axis.
CELLS = """return [...document.querySelectorAll('#' + arguments[0] + ' rect.cell')]
           .map(r => [+r.dataset.q, +r.dataset.k, +r.dataset.w, r.getAttribute('fill')])"""
LABELS = "return [...document.querySelectorAll('#' + arguments[0] + ' text.' + arguments[1])].map(t => t.textContent)"


def test_the_page_translates_and_draws_attention_in_a_real_browser(server, translator):
    driver = browser()  # first: skips without selenium or chromium
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server[0])
        wait.until(lambda d: d.find_element(By.ID, "output").text == translator.translate([CAT])[0])  # on load
        wait.until(lambda d: d.find_element(By.ID, "cross").get_attribute("data-sentence") == CAT)

        sentence = SENTENCES[1]
        box = driver.find_element(By.ID, "source")
        box.clear()
        box.send_keys(sentence)
        driver.find_element(By.ID, "translate").click()
        wait.until(lambda d: d.find_element(By.ID, "output").text == translator.translate([sentence])[0])
        wait.until(lambda d: d.find_element(By.ID, "decoder").get_attribute("data-sentence") == sentence)
        assert driver.find_element(By.ID, "error").text == ""

        _, maps = translator.attention_maps(sentence)
        for kind, attention in maps.items():
            assert driver.execute_script(LABELS, kind, "query") == attention.query_pieces, kind
            assert driver.execute_script(LABELS, kind, "key") == attention.key_pieces, kind
            cells = driver.execute_script(CELLS, kind)  # default: the last layer, the mean over heads
            shown = torch.zeros(attention.weights.shape[-2:])
            for q, k, w, _ in cells:
                shown[q, k] = w
            assert len(cells) == shown.numel(), kind
            assert torch.allclose(shown, attention.weights[-1].mean(0), atol=1e-3), kind
        zero = {fill for q, k, w, fill in driver.execute_script(CELLS, "decoder") if k > q}
        assert len(zero) == 1 and all(w == 0 for q, k, w, _ in driver.execute_script(CELLS, "decoder") if k > q)

        Select(driver.find_element(By.ID, "cross-head")).select_by_value("2")
        head = torch.zeros(maps["cross"].weights.shape[-2:])
        for q, k, w, _ in driver.execute_script(CELLS, "cross"):
            head[q, k] = w
        assert torch.allclose(head, maps["cross"].weights[-1, 2], atol=1e-3)

        picture = Image.open(io.BytesIO(driver.find_element(By.ID, "cross").screenshot_as_png)).convert("RGB")
        assert len(picture.getcolors(1 << 20)) > 20  # drawn: many colours on the screen, not a blank box
    finally:
        driver.quit()
