"""satkern report on synthetic run folders: partial runs, what the page shows comes from the files,
and every bad input is one clear error with nothing written."""
import base64
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from satkern.cli import main
from satkern.report import RunFolderError, load_runs, write_report

from report_runs import MODEL, NEAR_UNIFORM_HEAD, L, H, make_all, make_analyze, make_rank, make_segment, write_maps

SECTION_IDS = ["summary", "overview", "head-map", "attention-maps", "head-explorer", "segmentation",
               "phoneme-relations", "pruning"]


class _Page(HTMLParser):
    """Sections, images and the head table's cells of a report page."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.scripts_src, self.links = [], [], [], []
        self.head_rows, self._in_heads, self._row, self._cell = [], False, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "id" in a:
            self.sections.append(a["id"])
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "script" and "src" in a:
            self.scripts_src.append(a["src"])
        if tag == "link":
            self.links.append(a.get("href", ""))
        if tag == "table" and "heads" in a.get("class", "").split():
            self._in_heads = True
        if self._in_heads and tag == "tr":
            self._row = []
        if self._row is not None and tag == "td":
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_heads = False
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        if tag == "tr" and self._row:
            self.head_rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parse(path):
    p = _Page()
    p.feed(Path(path).read_text(encoding="utf-8"))
    return p


def _one_line_error(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_full_report_has_every_section_with_inline_figures(tmp_path):
    a, s, r = make_all(tmp_path / "runs")
    res = write_report([a, s, r], tmp_path / "report.html")
    assert res.sections_missing == []
    page = _parse(res.path)
    assert page.sections == SECTION_IDS
    # 5 head-map figures (length-free and raw scatter, categories, Fig. 6a, distributions) + 6 maps + Fig. 2
    # + Fig. 2e + 2 PRMs + Fig. 4 + Fig. 5
    assert len(page.images) == 17, len(page.images)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert page.scripts_src == [] and page.links == []
    text = res.path.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch, not even a link
    assert "default-src 'none'" in text
    assert "not in the given runs" not in text
    assert "task reconstruction skipped: the model has no pre-training head" in text  # rank's notes
    assert len(page.head_rows) == L * H
    assert not list(tmp_path.glob(".report.html.tmp-*"))


def test_table_numbers_come_from_heads_csv(tmp_path):
    a = make_analyze(tmp_path / "a", maps=False, prm=False)
    write_report([a], tmp_path / "r1.html")
    rows = {(int(r[0]), int(r[1])): r for r in _parse(tmp_path / "r1.html").head_rows}
    df = pd.read_csv(a / "heads.csv")
    assert rows[(1, 2)][2] == f"{df.loc[(df.layer == 1) & (df['head'] == 2), 'G'].item():.4f}"
    df.loc[(df.layer == 1) & (df["head"] == 2), "G"] = 9.8765
    df.loc[(df.layer == 0) & (df["head"] == 1), "category"] = "vertical"
    df.to_csv(a / "heads.csv", index=False)
    write_report([a], tmp_path / "r2.html")
    rows2 = {(int(r[0]), int(r[1])): r for r in _parse(tmp_path / "r2.html").head_rows}
    assert rows2[(1, 2)][2] == "9.8765"
    assert rows2[(0, 1)][6] == "vertical"
    assert rows2[(0, 0)] == rows[(0, 0)]  # the rest unchanged


@pytest.mark.parametrize("parts, missing", [
    (("analyze",), ["segment", "rank"]),
    (("analyze", "segment"), ["rank"]),
    (("segment", "rank"), ["analyze"]),
])
def test_partial_runs_say_which_command_makes_the_rest(tmp_path, capsys, parts, missing):
    makers = {"analyze": make_analyze, "segment": make_segment, "rank": make_rank}
    dirs = [makers[p](tmp_path / p) for p in parts]
    out = tmp_path / "report.html"
    assert main(["report", *map(str, dirs), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    text = out.read_text()
    assert _parse(out).sections == SECTION_IDS
    for m in missing:
        cmd = f"satkern {m} --model MODEL --corpus CORPUS --out DIR"
        assert cmd in text and cmd in printed
    for p in parts:
        if p != "analyze":
            assert f"satkern {p} --model MODEL" not in text


def test_analyze_without_maps_or_prm(tmp_path):
    a = make_analyze(tmp_path / "a", maps=False, prm=False)
    res = write_report([a], tmp_path / "r.html")
    assert set(res.sections_missing) == {"segment", "rank", "maps", "prm"}
    text = (tmp_path / "r.html").read_text()
    assert "--maps 1" in text and "prm.npz" in text


def test_a_folder_of_run_folders_stands_for_them(tmp_path):
    make_all(tmp_path / "demo")
    data = load_runs([tmp_path / "demo"])
    assert data.missing() == [] and [p.name for p in data.folders] == ["analyze", "rank", "segment"]


def test_no_run_folder(tmp_path, capsys):
    _one_line_error(capsys, ["report", "--out", str(tmp_path / "r.html")], "no run folder given")
    assert not (tmp_path / "r.html").exists()


def test_missing_and_unknown_folders(tmp_path, capsys):
    _one_line_error(capsys, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")],
                    "does not exist", "nope")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    _one_line_error(capsys, ["report", str(tmp_path / "stuff"), "--out", str(tmp_path / "r.html")],
                    "is not a satkern run folder", "heads.csv")
    assert not (tmp_path / "r.html").exists()


def _corrupt_heads_missing_column(a):
    pd.read_csv(a / "heads.csv").drop(columns=["V"]).to_csv(a / "heads.csv", index=False)


def _corrupt_heads_text(a):
    df = pd.read_csv(a / "heads.csv")
    df["G"] = df["G"].astype(object)
    df.loc[0, "G"] = "oops"
    df.to_csv(a / "heads.csv", index=False)


@pytest.mark.parametrize("corrupt, needle", [
    (_corrupt_heads_missing_column, "heads.csv: corrupt heads.csv: columns ['V'] missing"),
    (_corrupt_heads_text, "column 'G' is not numeric"),
    (lambda a: (a / "summary.json").write_text("{not json"), "corrupt summary.json"),
    (lambda a: (a / "summary.json").unlink(), "summary.json missing"),
    (lambda a: (a / "maps.npz").write_bytes(b"PK\x03\x04garbage"), "corrupt maps.npz"),
    (lambda a: (a / "prm.npz").write_bytes(b"\x00" * 64), "corrupt prm.npz"),
    (lambda a: (a / "heads.csv").write_text(""), "corrupt heads.csv"),
])
def test_corrupt_run_folder_is_one_clear_error_and_the_old_report_stays(tmp_path, capsys, corrupt, needle):
    a = make_analyze(tmp_path / "a")
    out = tmp_path / "r.html"
    out.write_text("<html>an earlier report</html>")
    before = out.read_bytes()
    corrupt(a)
    _one_line_error(capsys, ["report", str(a), "--out", str(out)], needle)
    assert out.read_bytes() == before  # nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "r.html"]


def test_maps_from_another_model_are_refused(tmp_path, capsys):
    other = dict(MODEL, name="other-model", weights_checksum="ffffffffffffffff")
    a = make_analyze(tmp_path / "a", maps=False)
    rng = np.random.default_rng(5)
    write_maps(a / "maps.npz", rng, pd.read_csv(a / "heads.csv"), model=other)
    _one_line_error(capsys, ["report", str(a), "--out", str(tmp_path / "r.html")], "maps of model 'other-model'",
                    "tiny-test")
    assert not (tmp_path / "r.html").exists()


def test_maps_of_heads_the_run_does_not_have_are_refused(tmp_path):
    a = make_analyze(tmp_path / "a", prm=False)
    df = pd.read_csv(a / "heads.csv")
    df[df.layer == 0].to_csv(a / "heads.csv", index=False)  # a 1-layer "model"
    z = dict(np.load(a / "maps.npz"))
    if not (z["map_layer"] == 1).any():
        z["map_layer"][0] = 1
    np.savez(a / "maps.npz", **z)
    with pytest.raises(RunFolderError, match="does not have"):
        write_report([a], tmp_path / "r.html")


def test_summary_states_counts_near_uniform_heads_and_the_paper(tmp_path):
    a, s, r = make_all(tmp_path / "runs")
    write_report([a, s, r], tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    summary = text.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    heads = pd.read_csv(a / "heads.csv")
    counts = {c: int((heads.category == c).sum()) for c in ("global", "vertical", "diagonal")}
    assert (f"{L * H} heads ({L} layers x {H} heads): {counts['global']} global, {counts['vertical']} vertical, "
            f"{counts['diagonal']} diagonal") in summary
    l, h = NEAR_UNIFORM_HEAD
    assert f"1 of them are near uniform" in summary and f"{l}:{h}" in summary
    assert 'data-part="segmentation"' in summary and "0.7999" in summary  # the paper's R-value beside the run's
    assert 'data-part="pruning"' in summary and "D &gt; V &gt; G" in summary
    # the head table: a uniform-attention row above the heads, the near-uniform head marked
    assert '<tr class="uniform">' in text
    rows = {(int(r[0]), int(r[1])): r for r in _parse(tmp_path / "r.html").head_rows}
    assert rows[NEAR_UNIFORM_HEAD][7] == "yes" and sum(r[7] == "yes" for r in rows.values()) == 1
    per = pd.read_parquet(a / "utterances.parquet")
    g = per[(per.layer == l) & (per["head"] == h)]
    free = (g["G"] / np.log(g["frames"])).to_numpy()
    assert rows[NEAR_UNIFORM_HEAD][8] == (f"{free.mean():.3f} [{np.percentile(free, 5):.2f}, "
                                           f"{np.percentile(free, 95):.2f}]")


def test_without_per_utterance_values_the_baselines_are_approximate_and_said_so(tmp_path):
    a = make_analyze(tmp_path / "a", per_utterance=False, maps=False)
    write_report([a], tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert "approximate: uniform attention at the mean length" in text
    assert '<tr class="uniform"><th class="t" colspan="2">uniform attention</th><th>\u2248 ' in text  # marked approximate
    assert "No per-utterance distributions" in text


def _other_model_runs(root, name="other", checksum="1111111111111111", **kw):
    other = dict(MODEL, name=name, weights_checksum=checksum, **kw)
    return [make_analyze(root / "analyze", seed=7, model=other), make_segment(root / "segment", model=other),
            make_rank(root / "rank", model=other)]


def test_runs_of_different_models_are_shown_side_by_side(tmp_path, capsys):
    a, s, r = make_all(tmp_path / "one")
    _other_model_runs(tmp_path / "two", random_weights=False)
    out = tmp_path / "cmp.html"
    assert main(["report", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 models side by side" in printed
    page = _parse(out)
    assert page.sections == ["summary", "head-maps", "categories", "segmentation", "pruning"]
    assert len(page.images) == 4  # head maps, categories, PR envelopes, pruning curves: each all models at once
    text = out.read_text()
    assert "satkern report: tiny-test vs other" in text
    assert text.count('<h3 data-model="') == 2 and text.count('data-part="heads"') == 2
    assert "default-src 'none'" in text and "RANDOM WEIGHTS" in text  # tiny-test has random weights


def test_side_by_side_with_a_part_missing_names_it(tmp_path):
    make_all(tmp_path / "one")
    b = _other_model_runs(tmp_path / "two")[0]
    res = write_report([tmp_path / "one", b], tmp_path / "cmp.html")
    assert res.models == 2 and res.sections_missing == ["segment of other", "rank of other"]
    text = (tmp_path / "cmp.html").read_text()
    assert "other: no segment run given" in text and "other: no rank run given" in text


def test_two_models_of_one_name_are_told_apart_by_their_weights(tmp_path):
    make_all(tmp_path / "one")
    _other_model_runs(tmp_path / "two", name="tiny-test", checksum="2222222222222222")
    write_report([tmp_path / "one", tmp_path / "two"], tmp_path / "cmp.html")
    text = (tmp_path / "cmp.html").read_text()
    assert "tiny-test (01234567) vs tiny-test (22222222)" in text


def test_two_runs_of_one_kind_for_one_model_are_refused(tmp_path, capsys):
    with pytest.raises(RunFolderError, match="two analyze runs of one model"):
        write_report([make_analyze(tmp_path / "a"), make_analyze(tmp_path / "b")], tmp_path / "r.html")
    _one_line_error(capsys, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r.html")],
                    "two analyze runs of one model")
    assert not (tmp_path / "r.html").exists()


def test_a_run_naming_no_model_among_several_models_is_refused(tmp_path, capsys):
    import json

    make_all(tmp_path / "one")
    _other_model_runs(tmp_path / "two")
    summary = json.loads((tmp_path / "two" / "rank" / "summary.json").read_text())
    del summary["model"]
    (tmp_path / "two" / "rank" / "summary.json").write_text(json.dumps(summary))
    _one_line_error(capsys, ["report", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "r.html")],
                    "records no model", "rank")
    assert not (tmp_path / "r.html").exists()


def test_output_in_a_missing_folder_or_on_a_folder(tmp_path, capsys):
    a = make_analyze(tmp_path / "a")
    _one_line_error(capsys, ["report", str(a), "--out", str(tmp_path / "no" / "such" / "r.html")],
                    "--out", "does not exist")
    assert not (tmp_path / "no").exists()
    _one_line_error(capsys, ["report", str(a), "--out", str(tmp_path)], "is a folder")
