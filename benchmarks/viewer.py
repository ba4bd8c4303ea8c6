"""Benchmark: the viewer's time from upload to result for one 600x450 image, and its start-up time.

    python benchmarks/viewer.py [--run runs/demo | --backbone B0 --size 224] [--repeats 5] [--no-browser]

Starts the real command (`python -m dermo.viewer ... --port 0`) on a run folder, or on a classifier with random
weights (B0-B7 at --size px, binary, saved as .keras), and times:
  start-up        from launching the command to its "open http://..." line (imports, model load, warm-up);
  HTTP            POST /api/predict of a generated 600x450 JPEG until its whole JSON answer has arrived
                  (decode, preprocessing, probabilities and CAMs, pictures encoded);
  browser         in headless Chromium: from choosing the file in the page until its result card is drawn
                  (skipped without chromium + chromedriver, or with --no-browser).
Best and median of --repeats uploads. All files go to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a run folder to serve (default: a random-weight classifier)")
    p.add_argument("--backbone", default="B0", help="random-weight classifier: B0..B7")
    p.add_argument("--size", type=int, default=224, help="random-weight classifier: input size, px")
    p.add_argument("--repeats", type=int, default=5, help="uploads timed")
    p.add_argument("--no-browser", action="store_true", help="time over HTTP only")
    return p.parse_args(argv)


def random_model(tmp: Path, backbone: str, size: int) -> Path:
    import keras

    from dermo.model.network import build_graph, inference_model

    keras.utils.set_random_seed(0)
    inputs, outputs = build_graph(backbone, 2, size, weights="none")
    inference_model(keras.Model(inputs, outputs)).save(tmp / "model.keras")
    return tmp / "model.keras"


def lesion_jpeg(path: Path) -> Path:
    import cv2
    import numpy as np

    from dermo.data.imageio import write_jpeg
    from dermo.data.synthetic_draw import draw_lesion_image

    img, _ = draw_lesion_image("mel", np.random.default_rng(0), 600)
    write_jpeg(path, cv2.resize(img, (600, 450), interpolation=cv2.INTER_AREA), quality=92)
    return path


def start(argv: list[str]) -> tuple[subprocess.Popen, str, float]:
    begin = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dermo.viewer", *argv, "--port", "0", "--stop-after", "900"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "open " not in line:
        proc.kill()
        raise SystemExit(f"the viewer did not start: {line!r}")
    return proc, line.split("open ")[1].split()[0], time.perf_counter() - begin


def http_upload(url: str, image: Path) -> float:
    begin = time.perf_counter()
    req = urllib.request.Request(url + "api/predict?name=lesion.jpg", image.read_bytes(), method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        assert "members" in json.loads(r.read())
    return time.perf_counter() - begin


def browser_uploads(url: str, image: Path, repeats: int) -> list[float] | None:
    import shutil

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    d = webdriver.Chrome(options=options, service=Service(driver))
    try:
        d.get(url)
        WebDriverWait(d, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        times = []
        for i in range(repeats):
            begin = time.perf_counter()
            d.find_element("id", "files").send_keys(str(image))
            WebDriverWait(d, 300, poll_frequency=0.01).until(
                lambda d: len(d.find_elements("css selector", ".card[data-state=done]")) > i)
            times.append(time.perf_counter() - begin)
        return times
    finally:
        d.quit()


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dermo-bench-viewer-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("DERMO_CACHE", str(tmp / "cache"))
        if args.run:
            served, what = ["--run", args.run], args.run
        else:
            served = ["--models", str(random_model(tmp, args.backbone, args.size)), "--task", "binary"]
            what = f"{args.backbone} at {args.size} px, random weights"
        image = lesion_jpeg(tmp / "lesion.jpg")
        size = image.stat().st_size
        proc, url, startup = start(served)
        try:
            http = [http_upload(url, image) for _ in range(args.repeats)]
            page = None if args.no_browser else browser_uploads(url, image, args.repeats)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    print(f"viewer on {what}; one 600x450 JPEG ({size / 1024:.0f} kB); "
          f"{os.cpu_count()} CPU(s)")
    print(f"start-up until serving:        {startup:6.2f} s")
    print(f"HTTP upload -> JSON answer:    best {min(http):6.3f} s, median {statistics.median(http):6.3f} s")
    if page:
        print(f"page upload -> result drawn:   best {min(page):6.3f} s, median {statistics.median(page):6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
