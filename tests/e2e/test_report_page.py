"""The report as a clinician gets it and a browser shows and prints it.

Through the installed ``closedloop`` command (``tools/screenshots.py``'s
:func:`make_report`, which also makes ``docs/report.png``): the simulated patient P01 is
calibrated, a session runs from that calibration and is recorded, ``closedloop report``
writes the page. Headless Chromium then renders it (the words a clinician reads, in
clinical units), prints it (one or two A4 pages) and takes its picture (the figures
drawn); the shipped ``docs/report.png`` must still show the same page layout. When the
report changes, refresh the picture with
``PYTHONPATH=. python tools/screenshots.py --only report`` and commit it.
"""

from __future__ import annotations

import html as html_
import importlib.util
import re

import numpy as np
import pytest
from matplotlib.image import imread

from closedloop.config import load_config
from tests.browser import A4_PT, dump_dom, pdf_pages, print_pdf
from tests.conftest import ROOT

SHOT = ROOT / "docs" / "report.png"
BLOCK = 10  # pixels
#: Blocks of the picture that may differ from the shipped one: the date, the session's
#: random name, the generated time and the figures that depend on where the commands took
#: effect live (onset to stimulation, effort) change from run to run (about 1 % of 14,000).
MAX_BLOCKS_DIFFERENT = 140


def _tool():
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "tools" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-page")
    page = _tool().make_report(folder)
    return folder, page


def words(html: str) -> str:
    """The text of some HTML as a reader sees it: tags dropped, whitespace squeezed."""
    html = re.sub(r"<(svg|style)\b.*?</\1>", " ", html, flags=re.S)
    return html_.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


@pytest.mark.timeout(400)
def test_the_rendered_page_says_what_a_clinician_needs_in_clinical_units(made):
    folder, page = made
    dom = dump_dom(page, folder / "profile")
    text = words(dom)
    for expected in ("Session report: patient P01", "Patient P01", "Operator A. Nurse",
                     "Program biceps_triceps", "Duration 30.0 s", "Safety checklist",
                     "not asked (simulated stimulator)", "from the session's config",
                     "Effort per attempt (% MVC)", "From the EMG onset to the first pulse",
                     "Appendix: engineering detail"):
        assert expected in text, expected
    assert re.search(r"Date and time \d{4}-\d\d-\d\d \d\d:\d\d ", text)
    # the calibration: rest, rest SD and MVC of each muscle in µV; no on-threshold in µV
    # for the shipped detector (cusum decides on nats), and the page says why
    for muscle in ("biceps", "triceps"):
        assert re.search(rf"{muscle} [\d.]+ µV [\d.]+ µV [\d.]+ µV - ", text), muscle
    assert "cusum statistic in nats" in text
    assert re.search(r"Repetitions [1-9]\d* ", text)
    assert re.search(r"Stimulation time biceps [\d.]+ s session limit 30 min 00 s per muscle",
                     text)
    assert re.search(r"biceps 1 [1-9]\d* [\d.]+ s [\d.]+ % 20 mA 250 µs 35 Hz [\d.]+ mC", text)
    assert re.search(r"Onset to stimulation [\d.]+ ms median over [1-9]", text)
    assert re.search(r"biceps [1-9]\d* [\d.]+ % \([\d.]+ µV\)", text)  # effort, % MVC and µV
    # no engineer's numbers before the appendix: no exponents, no NaN, no volts
    clinical = text[: text.index("Appendix: engineering detail")]
    assert not re.search(r"\d[eE][-+]?\d", clinical)
    assert not re.search(r"\bnan\b|\binf\b", clinical, re.I)
    assert " V " not in clinical and "Warnings and faults" not in text  # a clean session
    # the figures are inline, each with its drawing (nothing to fetch)
    svgs = re.findall(r"<svg\b[^>]*>.*?</svg>", dom, re.S)
    assert len(svgs) == 3  # the timeline, the effort, the evoked response (M-wave)
    assert all(s.count("<path") + s.count("<use") > 10 for s in svgs)  # lines and markers
    assert not re.search(r'(src|href)="(?!data:|#)', dom.split("<svg")[0])


@pytest.mark.timeout(400)
def test_it_prints_on_one_or_two_a4_pages(made):
    folder, page = made
    pages = pdf_pages(print_pdf(page, folder / "report.pdf", folder / "profile"))
    assert 1 <= len(pages) <= 2
    assert all(abs(w - A4_PT[0]) < 2 and abs(h - A4_PT[1]) < 2 for w, h in pages)


@pytest.mark.timeout(500)
def test_a_cusum_session_s_report_prints_on_two_a4_pages_too(tmp_path):
    """A detector whose statistic is not the EMG level gives each muscle two lanes in the
    timeline (EMG level in µV, statistic): the page still prints on two A4 pages."""
    from tests.runtime.conftest import with_detector

    tool = _tool()
    config = load_config(tool.REPORT_CONFIG)
    cusum = tmp_path / "cusum.toml"
    cusum.write_text(with_detector(config, "cusum").text)
    (tmp_path / "made").mkdir()
    page = tool.make_report(tmp_path / "made", config=cusum)
    assert "cusum statistic" in page.read_text()
    pages = pdf_pages(print_pdf(page, tmp_path / "report.pdf", tmp_path / "profile"))
    assert 1 <= len(pages) <= 2


def background(img: np.ndarray) -> np.ndarray:
    """Per block, whether it is mostly the page's white background."""
    mask = (img[..., :3] > 0.98).all(axis=-1)
    h, w = (s // BLOCK * BLOCK for s in mask.shape)
    return mask[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).mean(axis=(1, 3)) > 0.9


@pytest.mark.timeout(400)
def test_the_screenshot_shows_the_figures_and_the_shipped_one_is_current(made):
    folder, page = made
    tool = _tool()
    png = tool.take_report_screenshot(page, folder / "report.png", folder / "profile")
    img = imread(png)
    assert img.shape[:2] == tool.REPORT_WINDOW[::-1]
    rgb = (img[..., :3] * 255).round().astype(int).reshape(-1, 3)

    def pixels(colour: tuple[int, int, int], tol: int = 12) -> int:
        return int(np.all(np.abs(rgb - colour) <= tol, axis=1).sum())

    assert pixels((0xd6, 0x27, 0x28)) > 300, "no on-threshold line drawn"
    assert pixels((0x59, 0x59, 0x59), 20) > 3000, "no envelope drawn"
    assert pixels((0x1f, 0x77, 0xb4)) > 30, "no effort points drawn"

    shipped = imread(SHOT)
    refresh = ("docs/report.png shows an older report: PYTHONPATH=. python "
               "tools/screenshots.py --only report")
    assert shipped.shape == img.shape, refresh
    assert (background(shipped) != background(img)).sum() <= MAX_BLOCKS_DIFFERENT, refresh


@pytest.mark.timeout(400)
def test_the_session_s_random_id_does_not_move_the_page(made, tmp_path):
    """Every stream's name holds the session's random id, whose hex letters and digits
    are not equally wide: the page with the widest id and with the narrowest has the same
    layout (the appendix once wrapped its streams' row onto another line for some ids,
    and CI's comparison with the shipped picture failed on 803 and 809 blocks)."""
    folder, page = made
    text = page.read_text(encoding="utf-8")
    ids = set(re.findall(r"-([0-9a-f]{12})-EMG", text))
    assert len(ids) == 1, ids
    (sid,) = ids
    blocks = []
    for new in ("f" * 12, "0" * 12):
        variant = tmp_path / new / "session.html"
        variant.parent.mkdir()
        variant.write_text(text.replace(sid, new), encoding="utf-8")
        png = _tool().take_report_screenshot(variant, tmp_path / new / "report.png",
                                             tmp_path / new / "profile")
        blocks.append(background(imread(png)))
    assert (blocks[0] != blocks[1]).sum() <= MAX_BLOCKS_DIFFERENT


def test_the_layout_check_sees_a_moved_section():
    """The comparison is not blind: the shipped picture with its effort plot moved
    down by 60 pixels is not the same page."""
    img = imread(SHOT)
    moved = img.copy()
    moved[700:1300] = img[640:1240]
    assert (background(img) != background(moved)).sum() > MAX_BLOCKS_DIFFERENT


def test_the_docs_show_the_report():
    assert "docs/report.png" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(report.png)" in (ROOT / "docs" / "first_session.md").read_text(encoding="utf-8")
