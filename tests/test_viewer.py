"""python -m dermo.viewer on the session's run (conftest.tiny_run) and its evaluation (conftest.tiny_eval),
served by the real command on 127.0.0.1 and a free port:

- in a real headless browser (Debian's Chromium through chromedriver): an uploaded synthetic image shows
  Predictor's probabilities, its preprocessed image, contour and every class's CAM; every bad upload shows one
  line in the page; the evaluation table filters, sorts and opens a row;
- over HTTP: the JSON API equals Predictor, each bad upload is refused with its status and one line, no file
  outside the run and evaluation folders is served, foreign Host headers are refused;
- an ensemble is soft-voted as ensemble.py does; Ctrl-C stops the command; bad options are one line.

The command runs with --stop-after, and is stopped by Ctrl-C at the end of the module (killed if it must).
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, one_line_error
from PIL import Image

from dermo.data.imageio import read_image, write_png
from dermo.data.synthetic_draw import draw_lesion_image
from dermo.predict import Predictor
from dermo.viewer import cli
from dermo.evaluation.sources import resolve_source
from dermo.viewer.app import MB, Viewer
from dermo.viewer.members import Members, expand
from dermo.viewer.problems import ViewerError

LIMIT = 1 * MB                     # the test servers' upload limit
WAIT = 60                          # seconds the browser may wait for one answer


def lesion_image(path, width=600, height=450, seed=0, cls="mel") -> Path:
    """A generated dermoscopy-like image of width x height as a PNG."""
    img, _ = draw_lesion_image(cls, np.random.default_rng(seed), max(width, height))
    write_png(path, cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))
    return Path(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good 600x450 upload and one file of each bad kind."""
    d = tmp_path_factory.mktemp("uploads")
    good = lesion_image(d / "lesion.png")
    (d / "notes.jpg").write_text("these are not pixels\n")
    (d / "cut.png").write_bytes(good.read_bytes()[:4000])
    Image.new("1", (9000, 9000)).save(d / "huge.png")                 # 81 Mpx in a few kB
    (d / "big.png").write_bytes(np.random.default_rng(0).bytes(LIMIT + 1))
    assert good.stat().st_size < LIMIT
    return {"good": good, "not_image": d / "notes.jpg", "truncated": d / "cut.png", "pixels": d / "huge.png",
            "bytes": d / "big.png"}


@pytest.fixture(scope="module")
def eval_copy(tiny_eval, tmp_path_factory):
    """tiny_eval's files in a folder of our own, plus a link that points outside it."""
    d = tmp_path_factory.mktemp("eval") / "eval-val"
    shutil.copytree(tiny_eval, d)
    secret = d.parent / "secret.txt"
    secret.write_text("outside")
    (d / "leak.txt").symlink_to(secret)
    return d


def _sigint_as_a_shell():
    """In the child before exec: SIGINT unblocked and at its default, as a shell starts a command. The test process
    may carry another state (multiprocessing's resource tracker blocks SIGINT while it starts, from whichever
    thread starts it; a blocked or ignored SIGINT is inherited, and Ctrl-C then does nothing)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def command(tiny_run, eval_copy):
    """`python -m dermo.viewer --run tiny_run --eval <copy> --port 0 --max-upload-mb 1` starting (the tests'
    own Predictor loads meanwhile); stopped when the module ends."""
    argv = [sys.executable, "-m", "dermo", "view", "--run", str(tiny_run), "--eval", str(eval_copy), "--port", "0",
            "--max-upload-mb", str(LIMIT / MB), "--stop-after", "600"]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_as_a_shell)
    first_line: queue.Queue = queue.Queue()

    def read_stdout():
        first_line.put(proc.stdout.readline())
        for _ in proc.stdout:                                # and drain the rest
            pass

    threading.Thread(target=read_stdout, daemon=True).start()
    # drain stderr all along (progress bars of row predictions): a full pipe would block the viewer's writes
    proc.stderr_lines = []
    proc.stderr_drain = threading.Thread(target=lambda: proc.stderr_lines.extend(proc.stderr), daemon=True)
    proc.stderr_drain.start()
    yield proc, first_line
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor.from_run(tiny_run, batch_size=1)


@pytest.fixture(scope="module")
def url(command, predictor):
    """The command's address, once it serves."""
    proc, first_line = command
    line = first_line.get(timeout=180)
    assert "open http://127.0.0.1:" in line, (line, "".join(proc.stderr_lines))
    return line.split("open ")[1].split()[0]


def request(url, path, data=None, headers=None, method=None):
    """(status, JSON body or bytes) of one request."""
    req = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            status, body, kind = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, body, kind = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, json.loads(body) if kind.startswith("application/json") else body


def upload(url, path, name=None):
    return request(url, f"/api/predict?name={name or Path(path).name}", Path(path).read_bytes(),
                   {"Content-Type": "application/octet-stream"})


def decode(data_url: str) -> np.ndarray:
    """A data URL's picture as uint8 RGB(A)."""
    raw = np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8)
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------------------------ HTTP API
def test_api_view_is_the_predictors(url, files, predictor):
    status, view = upload(url, files["good"])
    assert status == 200, view
    expected = predictor.predict(read_image(files["good"]))
    assert view["classes"] == predictor.classes and (view["width"], view["height"]) == (600, 450)
    np.testing.assert_allclose(view["probs"], expected.probs[0], atol=1e-5)
    assert view["predicted"] == expected.predicted[0]
    [member] = view["members"]
    assert member["lesion_focus"] == pytest.approx(float(expected.lesion_focus[0]), abs=1e-5)
    np.testing.assert_array_equal(decode(member["preprocessed"]), expected.images[0])   # what the model saw
    assert len(member["cams"]) == 3 and all(decode(c).shape == (320, 320, 3) for c in member["cams"])
    contour = decode(member["contour"])
    assert contour.shape == (320, 320, 4) and 0 < (contour[..., 3] > 0).mean() < 0.2     # an outline only
    assert decode(view["original"]).shape == (384, 512, 3)                        # a thumbnail


@pytest.mark.parametrize("kind, status, says", [
    ("not_image", 400, "notes.jpg: not a readable image"),
    ("truncated", 400, "cut.png: truncated image file"),
    ("pixels", 400, "huge.png: image too large (9000x9000 pixels"),
    ("bytes", 413, "big.png: upload too large (1.0 MB; the limit is 1 MB"),
    ("empty", 400, "empty.png: empty file (0 bytes)"),
])
def test_api_refuses_each_bad_upload_in_one_line(url, files, kind, status, says):
    if kind == "empty":
        got, body = request(url, "/api/predict?name=empty.png", b"", method="POST")
    else:
        got, body = upload(url, files[kind])
    assert got == status and body["error"].startswith(says) and "\n" not in body["error"], body
    assert request(url, "/api/info")[0] == 200                         # still serving


def test_api_refuses_an_oversized_upload_without_reading_it(url):
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/api/predict?name=dump.tif")
    conn.putheader("Content-Length", str(10 ** 10))                    # 10 GB announced, none sent
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "dump.tif: upload too large (9536.7 MB" in json.loads(r.read())["error"]
    conn.close()


def test_files_never_come_from_outside_the_run_and_eval_folders(url, tiny_run, eval_copy):
    assert request(url, "/files/eval/cams.png") == (200, (eval_copy / "cams.png").read_bytes())
    assert request(url, "/files/m0/config.json")[1] == json.loads((tiny_run / "config.json").read_text())
    for path in ["/files/eval/leak.txt", "/files/eval/../secret.txt", "/files/eval/%2e%2e/secret.txt",
                 "/files/eval/..%2fsecret.txt", "/files/eval//etc/passwd", "/files/m0/../../../etc/passwd",
                 "/files/m1/config.json", "/files/eval/", "/files/" + str(tiny_run / "config.json"),
                 "/etc/passwd", "/static/../server.py"]:
        status, body = request(url, path)
        assert status == 404 and "error" in body, path


def test_foreign_host_names_and_unknown_pages_are_refused(url):
    status, body = request(url, "/api/info", headers={"Host": "evil.example:80"})
    assert status == 400 and "Host 'evil.example' refused" in body["error"]
    assert request(url, "/api/nothing")[0] == 404
    assert request(url, "/api/eval/999")[1]["error"].endswith("no row 999 (it has 9)")
    assert request(url, "/api/info", b"x", method="POST")[0] == 404


def test_ensemble_is_soft_voted_with_each_members_own_view(tiny_run, files, predictor, tmp_path):
    other_file = tmp_path / "other.h5"                       # another member: tiny_run's model, other biases,
    shutil.copy(tiny_run / "model.h5", other_file)          # saved without the contract (so it needs --task)
    with h5py.File(other_file, "r+") as f:
        f["model_weights/classifier/classifier/bias"][...] += np.array([-40.0, 0.0, 40.0], "float32")   # scc wins
        del f.attrs["dermo"]
    other = Members.load([str(other_file)], "multiclass")
    assert other.classes == predictor.classes
    run = resolve_source(tiny_run, own_run=True)
    members = Members([run, *other.sources], [predictor, *other.predictors], weights=[1.0, 3.0])
    view = Viewer(members).upload("lesion.png", files["good"].read_bytes())
    image = read_image(files["good"])
    pa, pb = predictor.predict(image).probs[0], other.predictors[0].predict(image).probs[0]
    assert np.abs(pa - pb).max() > 0.05
    np.testing.assert_allclose(view["probs"], (pa + 3 * pb) / 4, atol=1e-5)
    assert [m["name"] for m in view["members"]] == [str(tiny_run), str(other_file)]
    np.testing.assert_allclose(view["members"][1]["probs"], pb, atol=1e-5)
    with pytest.raises(ViewerError, match="the models disagree on their classes"):
        Members.load([str(tiny_run), str(other_file)], "binary")
    with pytest.raises(ViewerError, match="--weights: 1 weights for 2 models"):
        Members.load([str(tiny_run), str(other_file)], "multiclass", weights=[1])


def test_a_folder_of_runs_is_one_member_per_run(tiny_run, tmp_path):
    runs, cv = tmp_path / "runs", tmp_path / "cv"                # a plain folder of runs: by name
    for folder, names in ((runs, ("b", "a")), (cv, ("fold-10", "fold-2", "fold-1"))):
        folder.mkdir()
        for name in names:
            (folder / name).symlink_to(tiny_run, target_is_directory=True)
    assert expand(runs) == [str(runs / "a"), str(runs / "b")]
    pd.DataFrame({"path": ["x", "y", "z"], "fold": [10, 1, 2]}).to_csv(cv / "folds.csv", index=False)
    assert expand(cv) == [str(cv / f"fold-{k}") for k in (1, 2, 10)]             # dermo.cv's: in fold order
    assert expand(tiny_run) == [str(tiny_run)]
    with pytest.raises(ViewerError, match="neither a run folder"):
        expand(tmp_path)                                      # runs only two levels down: not a member list


# ---------------------------------------------------------------------------------------------------- CLI
def test_bad_options_are_one_line(capsys, tiny_run, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        msg = one_line_error(capsys, cli.main, ["--run", tiny_run, "--port", port], "dermo view")
    finally:
        busy.close()
    assert msg.startswith(f"--port {port}: already in use")
    msg = one_line_error(capsys, cli.main, ["--run", tmp_path, "--port", 0], "dermo view")
    assert msg.startswith(f"{tmp_path}: neither a run folder")
    msg = one_line_error(capsys, cli.main, ["--run", tiny_run, "--eval", tmp_path, "--port", 0], "dermo view")
    assert msg.startswith(f"--eval {tmp_path}: no predictions.csv")


# ------------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by chromedriver (Debian's chromium and chromium-driver; .ci/run installs
    them); skipped only where neither is installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no Chromium + chromedriver (apt-get install chromium chromium-driver; .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        options.add_argument(arg)
    d = webdriver.Chrome(options=options, service=Service(driver))
    d.set_page_load_timeout(WAIT)
    yield d
    d.quit()


def open_page(browser, url):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def wait_cards(browser, selector, n):
    from selenium.webdriver.support.ui import WebDriverWait

    css = f"{selector} .card:not([data-state=busy])"
    WebDriverWait(browser, WAIT).until(lambda d: len(d.find_elements("css selector", css)) >= n)
    return browser.find_elements("css selector", css)


def test_page_shows_the_predictors_view_of_an_upload(browser, url, files, predictor, tmp_path):
    open_page(browser, url)
    browser.find_element("id", "files").send_keys(str(files["good"]))
    [card] = wait_cards(browser, "#results", 1)
    assert card.get_attribute("data-state") == "done", card.text
    expected = predictor.predict(read_image(files["good"]))
    shown = {td.get_attribute("data-class"): td for td in card.find_elements("css selector", "td.prob")}
    assert list(shown) == predictor.classes
    for k, name in enumerate(predictor.classes):
        p = float(expected.probs[0, k])
        assert shown[name].text == f"{p:.4f}"
        assert float(shown[name].get_attribute("data-value")) == pytest.approx(p, abs=1e-5)
    assert card.find_element("css selector", ".predicted").text == expected.predicted[0]
    assert f"lesion focus: {expected.lesion_focus[0]:.2f}" in card.find_element("css selector", ".focus").text
    cams = card.find_elements("css selector", "figure.cam")
    assert [f.get_attribute("data-class") for f in cams] == predictor.classes
    sizes = browser.execute_script("return [...arguments[0].querySelectorAll('img')].map(i => i.naturalWidth)",
                                   card)
    assert 0 not in sizes                                               # every picture decoded
    slider = browser.find_element("id", "opacity")
    browser.execute_script("arguments[0].value = 80; arguments[0].dispatchEvent(new Event('input'))", slider)
    heat = card.find_element("css selector", "img.heat")
    assert float(heat.value_of_css_property("opacity")) == pytest.approx(0.8)
    shot = tmp_path / "viewer.png"
    assert browser.save_screenshot(str(shot))
    height, width, _ = read_image(shot).shape
    assert width == 1280 and height > 600 and shot.stat().st_size > 20_000


def test_page_shows_each_bad_upload_as_one_line(browser, url, files):
    open_page(browser, url)
    bad = ["not_image", "truncated", "pixels", "bytes"]
    browser.find_element("id", "files").send_keys("\n".join(str(files[k]) for k in bad))
    cards = wait_cards(browser, "#results", len(bad))
    messages = [c.find_element("css selector", ".message").text for c in cards]
    assert all(c.get_attribute("data-state") == "error" for c in cards)
    assert messages[0] == "notes.jpg: not a readable image (unknown format or corrupt data)"
    assert messages[1] == "cut.png: truncated image file (data ends early)"
    assert messages[2].startswith("huge.png: image too large (9000x9000 pixels; limit 80,000,000)")
    assert messages[3] == ("big.png: upload too large (1.0 MB; the limit is 1 MB, set by --max-upload-mb)")


def test_page_filters_sorts_and_opens_evaluation_rows(browser, url, eval_copy, predictor):
    frame = pd.read_csv(eval_copy / "predictions.csv")
    open_page(browser, url)
    browser.find_element("id", "tab-eval").click()
    rows = lambda: browser.find_elements("css selector", "#eval-table tbody tr")   # noqa: E731
    assert len(rows()) == len(frame) == 9
    browser.find_element("id", "misclassified").click()
    assert len(rows()) == (frame["label"] != frame["predicted"]).sum()
    browser.find_element("id", "misclassified").click()
    browser.find_element("css selector", "#pred-class option[value=mel]").click()
    assert len(rows()) == (frame["predicted"] == "mel").sum()
    browser.find_element("css selector", "#pred-class option[value='']").click()
    browser.find_element("id", "conf-min").send_keys("0.5")
    assert len(rows()) == (frame[predictor.classes].max(axis=1) >= 0.5).sum()
    browser.find_element("id", "conf-min").clear()
    browser.execute_script("document.getElementById('conf-min').dispatchEvent(new Event('input'))")
    header = browser.find_element("css selector", "th[data-key=lesion_focus]")
    header.click()
    header = browser.find_element("css selector", "th[data-key=lesion_focus]")
    header.click()                                                      # descending
    order = [int(r.get_attribute("data-row")) for r in rows()]
    assert order == list(frame["lesion_focus"].sort_values(ascending=False, kind="stable").index)
    rows()[0].click()
    [card] = wait_cards(browser, "#row-view", 1)
    i = order[0]
    assert card.get_attribute("data-state") == "done" and f"true {frame['label'][i]}" in card.text
    shown = [float(td.get_attribute("data-value")) for td in card.find_elements("css selector", "td.prob")]
    np.testing.assert_allclose(shown, frame.loc[i, predictor.classes].to_numpy(float), atol=1e-5)


def test_ctrl_c_stops_the_command(url, command):
    proc, _ = command
    assert request(url, "/api/info")[0] == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    proc.stderr_drain.join(timeout=20)                   # it ends at the pipe's end, after the last line
    assert "".join(proc.stderr_lines).strip().endswith("dermo view: stopped")
