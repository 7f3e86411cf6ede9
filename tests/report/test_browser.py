"""The report in a real browser: Debian's headless Chromium opens it from a file:// URL (DevTools
protocol over --remote-debugging-pipe): every image decodes, no request leaves the page, the console
stays clean, the head table sorts, and a screenshot is taken."""
import struct

import pytest

from satkern.report import write_report
from satkern.report.browser import check_page, find_chromium

from report_runs import MODEL, L, H, make_all, make_analyze, make_rank, make_segment

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on this machine "
                                                         "(apt-get install chromium; .ci/run does)")

# click the G column once (ascending), read the G cells top to bottom
SORT_BY_G = """(() => {
  const th = Array.from(document.querySelectorAll('table.heads thead th')).find(t => t.textContent === 'G');
  th.click();
  return Array.from(document.querySelectorAll('table.heads tbody tr')).map(r => parseFloat(r.cells[2].getAttribute('data-sort')));
})()"""


# the summary's paragraphs, and the first section below the navigation
SUMMARY = """(() => [Array.from(document.querySelectorAll('#summary p[data-part]')).map(p => p.getAttribute('data-part')),
                     document.querySelector('main section').id])()"""


def _png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_opens_offline_in_chromium(tmp_path):
    a, s, r = make_all(tmp_path / "runs")
    res = write_report([a, s, r], tmp_path / "report.html")
    check = check_page(res.path, scripts=[SORT_BY_G, SUMMARY])
    assert check.section_ids == ["summary", "overview", "head-map", "attention-maps", "head-explorer", "segmentation",
                                 "phoneme-relations", "pruning"]
    assert len(check.images) == 17
    assert check.broken_images == [], check.broken_images
    assert check.outside_requests == [], check.outside_requests
    assert check.requests and check.requests[0] == check.url
    assert check.console_errors == [], check.console_errors
    assert check.table_rows == L * H
    g = check.script_results[0]
    assert g == sorted(g) and len(g) == L * H
    parts, top = check.script_results[1]
    assert parts == ["heads", "segmentation", "pruning"] and top == "summary"  # the summary comes first
    w, h = _png_size(check.screenshot_png)
    assert w == 1280 and h > 2000
    (tmp_path / "report.png").write_bytes(check.screenshot_png)


def test_the_checker_sees_a_page_that_reaches_out(tmp_path):
    """Negative control: the same checks fail on a page with a remote image, a broken image and a
    console error (so a clean result above means something)."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><section id="x"><img src="http://example.invalid/a.png">'
                   '<img src="data:image/png;base64,AAAA"></section><script>console.error("boom")</script></body></html>')
    check = check_page(bad, screenshot=False)
    assert check.outside_requests == ["http://example.invalid/a.png"]
    assert len(check.broken_images) == 2
    assert any("boom" in e for e in check.console_errors)


def test_report_of_a_real_analyze_run_opens_offline(tmp_path):
    """A real `analyze --maps 1` run (tiny random s3prl model, 3 fixture utterances) plus segment and
    rank folders in their formats, for the same model: every section drawn, all from files."""
    import json
    from pathlib import Path

    from satkern.analysis import AnalyzeConfig, analyze

    from report_runs import make_rank, make_segment

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"
    a = tmp_path / "analyze"
    analyze(AnalyzeConfig(model="tiny-mockingjay-base", corpus=str(fixture), out=str(a), maps=1, max_utterances=3,
                          progress=False), log=lambda s: None)
    model = json.loads((a / "summary.json").read_text())["model"]
    res = write_report([a, make_segment(tmp_path / "segment", model=model), make_rank(tmp_path / "rank", model=model)],
                       tmp_path / "report.html")
    assert res.sections_missing == []
    html = res.path.read_text()
    check = check_page(res.path, screenshot=False)
    assert len(check.images) == html.count("<img ") >= 13
    assert check.broken_images == [] and check.outside_requests == [] and check.console_errors == []
    assert check.table_rows == model["layers"] * model["heads"]
    assert "tiny-mockingjay-base" in html and "RANDOM WEIGHTS" in html


def test_side_by_side_page_of_two_models_opens_offline(tmp_path):
    """Two models' runs on one page: every figure decodes, nothing is requested, the console stays clean,
    each model has its summary."""
    make_all(tmp_path / "one")
    other = dict(MODEL, name="other", weights_checksum="1111111111111111", random_weights=False)
    for make, kind in ((make_analyze, "analyze"), (make_segment, "segment"), (make_rank, "rank")):
        make(tmp_path / "two" / kind, model=other)
    res = write_report([tmp_path / "one", tmp_path / "two"], tmp_path / "cmp.html")
    assert res.models == 2
    models = "(() => Array.from(document.querySelectorAll('#summary h3[data-model]')).map(h => h.textContent))()"
    check = check_page(res.path, screenshot=False, scripts=[models])
    assert check.section_ids == ["summary", "head-maps", "categories", "segmentation", "pruning"]
    assert len(check.images) == 4 and check.broken_images == [], check.broken_images
    assert check.outside_requests == [] and check.console_errors == [], (check.outside_requests, check.console_errors)
    assert check.script_results[0] == ["tiny-test", "other"]
