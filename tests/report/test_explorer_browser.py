"""The head explorer in a real browser (headless Chromium over the DevTools protocol, as
test_browser.py): in the report, and as ``satkern.show``'s notebook HTML; a broken explorer fails."""
import html as _html

import pytest

import satkern
from satkern.report import write_report
from satkern.report.browser import find_chromium, open_page

from explorer_checks import check_explorer, synthetic_head_maps
from report_runs import H, L, MODEL, make_all

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on this machine "
                                                         "(apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    a, s, r = make_all(root / "runs")
    hm = synthetic_head_maps(MODEL, L, H)
    (a / "head_maps.npz").write_bytes(hm.to_npz_bytes())
    res = write_report([a, s, r], root / "report.html")
    return res.path, hm


def _run(path, hm, in_iframe=False):
    with open_page(path) as page:
        fails = check_explorer(page, hm, in_iframe=in_iframe)
        return fails, page.outside_requests(), page.console_errors()


def test_explorer_in_the_report(report):
    path, hm = report
    assert hm.utterances[1].factor > 1  # the second utterance is pooled: bins of several frames
    html = path.read_text()
    assert 'id="head-explorer"' in html and "Content-Security-Policy" in html and "default-src 'none'" in html
    fails, outside, errors = _run(path, hm)
    assert fails == []
    assert outside == []
    assert errors == []


def test_a_broken_explorer_fails_the_check(report, tmp_path):
    """Negative control: the same page with the thumbnails' click handler broken (a string substitution)."""
    path, hm = report
    html = path.read_text()
    needle = "self.selectHead(l_, h_);"
    assert html.count(needle) == 1
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace(needle, "void 0;"))
    fails, outside, errors = _run(broken, hm)
    assert any(f.startswith("thumbnail click") for f in fails), fails
    assert outside == [] and errors == []  # the check itself, not the page's hygiene, caught it


def test_satkern_show_html_in_an_iframe(tmp_path):
    """``satkern.show(head_maps)._repr_html_()`` (an iframe srcdoc) in a page, driven through the iframe."""
    hm = synthetic_head_maps(MODEL, 3, 2, frames=(30, 520), max_bins=128, seed=3)
    ex = satkern.show(hm)
    frag = ex._repr_html_()
    assert frag.startswith("<iframe") and "srcdoc=" in frag
    page = tmp_path / "notebook.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{frag}</body></html>")
    fails, outside, errors = _run(page, hm, in_iframe=True)
    assert fails == []
    assert outside == [] and errors == []
    # the page inside is the explorer page itself, with the report's CSP
    assert _html.unescape(frag.split('srcdoc="', 1)[1].split('"', 1)[0]) == ex.html
    assert "default-src 'none'" in ex.html
