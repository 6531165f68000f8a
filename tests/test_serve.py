"""The web page of ``ctsl_brain serve``: its API through gradio_client, and the page itself in a
real headless Chromium where one is installed (Debian's chromium and chromium-driver)."""

import os
import re
import shutil
import socket

import numpy as np
import pandas as pd
import pytest
import soundfile
from ctsl_brain.__main__ import main
from ctsl_brain.dataio import ATTRIBUTES
from ctsl_brain.deployment.inference import EmotionRegressor
from recipe_run import RATE

pytestmark = pytest.mark.slow
gradio = pytest.importorskip(
    "gradio", reason="serve needs gradio (requirements-serve.txt)"
)
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(teacher_export, tmp_path_factory):
    """The app of the teacher's export on a free port, with a short, a long and a broken file."""
    from ctsl_brain.deployment.serve import build_app

    folder = tmp_path_factory.mktemp("serve")
    model = EmotionRegressor.from_hparams(source=teacher_export["model"])
    short = teacher_export["test_files"][0]
    waves = [
        model.load_audio(path).numpy() for path in teacher_export["test_files"]
    ]
    speech = np.concatenate(waves)
    while len(speech) <= model.hparams.window_seconds * RATE + 3 * RATE:
        speech = np.concatenate([speech, speech])
    long = str(folder / "long.wav")
    soundfile.write(long, speech, RATE)
    broken = folder / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt not audio")
    port = _free_port()
    app = build_app(model)
    app.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
    )
    yield {
        "url": f"http://127.0.0.1:{port}/",
        "model": model,
        "files": {"short": short, "long": long, "broken": str(broken)},
        "export": teacher_export["model"],
        "folder": folder,
    }
    app.close()


def _predict_command(served, paths):
    out = served["folder"] / "predict.csv"
    main(
        [
            "predict",
            "--model",
            served["export"],
            *paths,
            "--out",
            str(out),
            "--noprogressbar",
        ]
    )
    return pd.read_csv(out, keep_default_na=False).set_index("file")


def test_the_api_gives_predicts_numbers_by_name_and_the_plot_of_a_long_file(
    served,
):
    from gradio_client import Client, handle_file

    client = Client(served["url"], verbose=False)
    files = served["files"]
    expected = _predict_command(
        served, [files["short"], files["long"], files["broken"]]
    )
    for name in ("short", "long"):
        scores, plot = client.predict(
            handle_file(files[name]), api_name="/predict"
        )
        assert list(scores) == list(ATTRIBUTES)
        for attribute in ATTRIBUTES:
            # predict writes 6 significant digits
            assert scores[attribute] == pytest.approx(
                float(expected.loc[files[name], attribute]), abs=1e-4
            )
        if name == "short":
            assert plot is None
        else:
            with open(plot, "rb") as fin:
                assert fin.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception) as error:
        client.predict(handle_file(files["broken"]), api_name="/predict")
    message = str(error.value)
    # predict's message for the file, its name in place of gradio's temporary copy
    assert expected.loc[files["broken"], "error"].split(": ")[0] in message
    assert "broken.wav" in message and "/tmp/gradio" not in message


def test_serve_listens_on_this_machine_only_by_default():
    from ctsl_brain.__main__ import _parser

    args = _parser().parse_args(["serve", "--model", "m"])
    assert args.host == "127.0.0.1" and args.port == 7860


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip(
            "no Chromium here: apt-get install chromium chromium-driver to run the page test"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium (requirements-dev.txt)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,1250",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(
        service=webdriver.ChromeService(driver), options=options
    )


def test_the_page_shows_the_numbers_and_the_plot_in_a_real_browser(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(served["url"])
        wait = WebDriverWait(browser, 120)
        upload = wait.until(
            lambda b: b.find_element(By.CSS_SELECTOR, "input[type=file]")
        )
        upload.send_keys(served["files"]["long"])
        wait.until(
            lambda b: b.find_elements(
                By.CSS_SELECTOR,
                "audio, .waveform-container, button[aria-label*='Play' i]",
            )
        )
        button = next(
            b
            for b in browser.find_elements(By.TAG_NAME, "button")
            if b.text.strip() == "Score"
        )
        button.click()

        def numbers(b):
            text = b.find_element(By.TAG_NAME, "body").text
            found = {
                name: re.search(rf"{name}[^\d\-]*(-?\d+\.\d+)", text)
                for name in ATTRIBUTES
            }
            return found if all(found.values()) else None

        found = wait.until(numbers)
        expected = served["model"].predict_file(served["files"]["long"])
        for name in ATTRIBUTES:
            assert float(found[name].group(1)) == pytest.approx(
                expected[name], abs=1e-4
            )
        plot = wait.until(
            lambda b: [
                image
                for image in b.find_elements(By.TAG_NAME, "img")
                if image.get_attribute("naturalWidth") not in (None, "0")
            ]
        )
        assert plot
        path = served["folder"] / "page.png"
        browser.save_screenshot(str(path))
        assert path.stat().st_size > 10000
        if os.environ.get("CTSL_SCREENSHOT"):
            shutil.copyfile(path, os.environ["CTSL_SCREENSHOT"])
    finally:
        browser.quit()
