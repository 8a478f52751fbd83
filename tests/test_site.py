"""The companion site (``visionzoo site``): the generated pages carry what the library computes,
and a real browser (headless Chromium through selenium) renders them: tables, sorting, images,
no console errors. CI installs Chromium (.ci/run); without it the browser test fails."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from visionzoo.ablate import ABLATIONS
from visionzoo.pretrained import pretrained_tags
from visionzoo.profile import human, profile, verify
from visionzoo.registry import list_models, model_info

REPO = Path(__file__).resolve().parents[1]
# resnet20 (0.27 M) sits between efficientnet_lite0 and swin_t by name but first by size, so
# sorting by params must move it; efficientnet_lite0 has real weights from pip (Grad-CAM)
MODELS = ["resnet18", "resnet20", "efficientnet_lite0", "swin_t"]
CHROMEDRIVER = "/usr/bin/chromedriver"


class Page(HTMLParser):
    """The parts of a generated page the tests read: tables by id (rows of cell texts, with
    each row's attributes), images, and every local reference (href/src)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.tables: dict[str, list[list[str]]] = {}
        self.row_attrs: dict[str, list[dict[str, str]]] = {}
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.refs: list[str] = []
        self._table: str | None = None
        self._section = ""
        self._cell: list[str] | None = None
        self.feed(path.read_text())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
            self.row_attrs[self._table] = []
        elif tag in ("thead", "tbody", "tfoot"):
            self._section = tag
        elif tag == "tr" and self._table is not None and self._section == "tbody":
            self.tables[self._table].append([])
            self.row_attrs[self._table].append(a)
        elif tag in ("td", "th") and self._table is not None and self._section == "tbody":
            self._cell = []
        elif tag == "img":
            self.images.append(a["src"])
        for key in ("href", "src"):
            if key in a and not a[key].startswith(("http://", "https://", "data:")):
                self.refs.append(a[key])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site of MODELS, built with the ablation results of one paper (the repository's
    committed resnet results) and with every weights cache pointed at an empty folder, so only
    the pip-installed Lite0 weights are 'on this machine' whatever this machine has cached."""
    import huggingface_hub.constants

    from visionzoo.site import build_site

    root = tmp_path_factory.mktemp("site")
    ablations = root / "ablations"
    shutil.copytree(REPO / "benchmarks/results/ablations/resnet", ablations / "resnet")
    empty = root / "empty-cache"
    empty.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONZOO_CACHE", str(empty))
        mp.setenv("TORCH_HOME", str(empty))
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty))
        result = build_site(root / "out", MODELS, ablations=ablations)
    return result


def test_pages_exist_and_index_lists_the_models_asked_for(site):
    out = site.out
    assert site.models == list_models(MODELS)
    families = sorted({model_info(m).family for m in MODELS})
    assert sorted(site.papers) == families
    for m in MODELS:
        assert (out / "models" / f"{m}.html").is_file()
    for f in families:
        assert (out / "papers" / f"{f}.html").is_file()
    index = Page(out / "index.html")
    assert [r["data-model"] for r in index.row_attrs["models"]] == list_models(MODELS)
    for row, name in zip(index.tables["models"], list_models(MODELS), strict=True):
        params, macs = profile(name).params, profile(name).macs
        assert row[0] == name and row[1] == model_info(name).family
        assert row[4] == human(params) and row[5] == human(macs)


def test_model_page_carries_the_library_stage_and_verify_rows(site):
    for name in ("resnet18", "swin_t"):
        page = Page(site.out / "models" / f"{name}.html")
        prof = profile(name)
        stages = page.tables["stages"]
        assert [r[0] for r in stages] == [s.name for s in prof.stages]
        assert [(r[5], r[6]) for r in stages] == [(human(s.params), human(s.macs))
                                                  for s in prof.stages]
        rows = verify(name)
        assert rows, f"{name} has no verify rows to compare"
        shown = page.tables["verify"]
        assert [(r[2], r[3], r[6]) for r in shown] == [(v.metric, v.published, v.status)
                                                       for v in rows]
        assert [r[4] for r in shown] == [v.source for v in rows]


def test_every_reference_resolves_and_images_are_real(site):
    pages = sorted(site.out.rglob("*.html"))
    assert len(pages) == 1 + len(site.models) + len(site.papers)
    seen_images = 0
    for path in pages:
        page = Page(path)
        for ref in page.refs:
            target = (path.parent / ref.split("#")[0]).resolve()
            assert target.is_file(), f"{path.name}: {ref} does not exist"
            assert site.out.resolve() in target.parents, f"{path.name}: {ref} leaves the site"
        for src in page.images:
            img = path.parent / src
            if img.suffix == ".png":
                with Image.open(img) as im:
                    assert min(im.size) > 50
            else:
                assert img.stat().st_size > 100
            seen_images += 1
    # a diagram per model, one Grad-CAM (Lite0's pip weights), the resnet ablation plot
    assert seen_images == len(site.models) + 1 + 1


def test_grad_cam_only_where_weights_are_here_and_the_others_say_why(site):
    lite0 = Page(site.out / "models" / "efficientnet_lite0.html")
    assert "cam" in lite0.ids and "cam-none" not in lite0.ids
    assert site.cam_files == {"efficientnet_lite0": "models/img/efficientnet_lite0-cam.png"}
    for name in ("resnet18", "swin_t", "resnet20"):
        page = Page(site.out / "models" / f"{name}.html")
        assert "cam" not in page.ids and "cam-none" in page.ids
    assert "--download" in site.cams["resnet18"]  # resnet18 has tags, none cached here
    assert "no published weights" in site.cams["resnet20"]  # the CIFAR net has none at all


def test_paper_pages_show_the_ablation_verdicts_or_say_there_are_none(site):
    summary = json.loads((REPO / "benchmarks/results/ablations/resnet/summary.json").read_text())
    resnet = Page(site.out / "papers" / "resnet.html")
    claims = resnet.tables["ablation-claims"]
    assert [(r[0], r[2]) for r in claims] == [(c["claim"], c["verdict"])
                                              for c in summary["claims"]]
    assert [r[0] for r in resnet.tables["ablation-arms"]] == [a["label"]
                                                              for a in summary["arms"]]
    assert (site.out / "papers/img/resnet-ablation.png").is_file()
    swin = Page(site.out / "papers" / "swin.html")  # no results in the folder given
    assert "ablation-missing" in swin.ids and "ablation-plot" not in swin.ids
    assert [r[2] for r in swin.tables["ablation-claims"]] == ["not run"] * len(
        ABLATIONS["swin"].claims)
    assert "visionzoo ablate swin" in (site.out / "papers" / "swin.html").read_text()


def test_cached_file_finds_only_a_file_with_the_published_hash(tmp_path, monkeypatch):
    from visionzoo.pretrained import PretrainedTag, cached_file

    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "vz"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    content = b"weights"
    prefix = hashlib.sha256(content).hexdigest()[:8]
    tag = PretrainedTag("resnet18", "t", "url", f"https://example.org/net-{prefix}.pth",
                        "torchvision:resnet18")
    assert cached_file(tag) is None
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / f"net-{prefix}.pth").write_bytes(b"corrupt")
    assert cached_file(tag) is None  # a file whose hash is not the published one is not used
    (hub / f"net-{prefix}.pth").write_bytes(content)
    assert cached_file(tag) == hub / f"net-{prefix}.pth"


# ---------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------


def test_cli_site_writes_and_says_how_to_view(tmp_path, capsys):
    from visionzoo.cli import main

    out = tmp_path / "s"
    assert main(["site", "--out", str(out), "resnet20", "--no-cam", "--ablations",
                 str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert f"python -m http.server -d {out}" in stdout and "1 model page (models/)" in stdout
    assert [r["data-model"] for r in Page(out / "index.html").row_attrs["models"]] == [
        "resnet20"]
    assert "--no-cam" in (out / "models" / "resnet20.html").read_text()
    assert main(["site", "--out", str(tmp_path / "t"), "nosuch*"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no registered model matches nosuch*" in err
    (tmp_path / "afile").write_text("x")
    assert main(["site", "--out", str(tmp_path / "afile"), "resnet20"]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main(["site", "--out", str(tmp_path / "u"), "resnet20", "--ablations",
                 str(tmp_path / "none")]) == 1
    assert "--ablations" in capsys.readouterr().err and not (tmp_path / "u").exists()


def test_cli_site_without_jinja2_names_the_site_extra(tmp_path):
    code = ("import sys; sys.modules['jinja2'] = None\n"
            "from visionzoo.cli import main\n"
            f"sys.exit(main(['site', '--out', {str(tmp_path / 's')!r}, 'resnet20']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'visionzoo[site]'" in lines[0], proc.stderr
    assert "jinja2" in lines[0] and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# a real browser
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(site):
    """The site over http.server on 127.0.0.1, as the README tells users to view it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site.out))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's chromium + chromium-driver). Missing is a failure: CI
    installs them (.ci/run)."""
    if shutil.which("chromium") is None or not Path(CHROMEDRIVER).is_file():
        pytest.fail("the site's browser test needs Chromium: apt-get install chromium "
                    "chromium-driver (.ci/run installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the site's browser test needs selenium: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1024"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _load(driver, url: str) -> list[dict]:
    """Open ``url``, wait until every image has loaded or failed, return the SEVERE console
    entries (failed requests, script errors) of that page."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && "
        "Array.from(document.images).every(i => i.complete)"))
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _row_models(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#models tbody tr'))"
        ".map(r => r.dataset.model)")


def test_browser_index_sorts_and_model_pages_show_tables_and_images(site, served, browser):
    from selenium.webdriver.common.by import By

    severe = _load(browser, f"{served}/index.html")
    assert _row_models(browser) == list_models(MODELS)
    by_params = sorted(MODELS, key=lambda m: profile(m).params)
    assert by_params != list_models(MODELS)  # the click must reorder the rows
    header = browser.find_element(By.XPATH, "//table[@id='models']/thead//th[text()='params']")
    header.click()
    assert _row_models(browser) == by_params
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _row_models(browser) == by_params[::-1]
    browser.find_element(By.XPATH, "//table[@id='models']/thead//th[text()='model']").click()
    assert _row_models(browser) == sorted(MODELS)  # text, digits by value

    for name in ("resnet18", "efficientnet_lite0"):
        severe += _load(browser, f"{served}/models/{name}.html")
        counts = browser.execute_script(
            "return ['stages', 'verify', 'tags'].map("
            "id => document.querySelectorAll('#' + id + ' tbody tr').length)")
        assert counts == [len(profile(name).stages), len(verify(name)),
                          len(pretrained_tags(name))]
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.id, i.naturalWidth])")
        expected = {"diagram", "cam"} if name == "efficientnet_lite0" else {"diagram"}
        assert {i for i, _ in images} == expected
        assert all(width > 0 for _, width in images), images
    severe += _load(browser, f"{served}/papers/resnet.html")
    assert browser.execute_script(
        "return document.getElementById('ablation-plot').naturalWidth") > 0
    # the same pages open from file:// (relative links only)
    severe += _load(browser, (site.out / "models" / "swin_t.html").as_uri())
    assert browser.execute_script("return document.getElementById('diagram').naturalWidth") > 0
    assert severe == []
