"""The head explorer's page without a browser: the data it carries is the stored data, the page asks
for nothing, and a bad head_maps.npz stops the report with one error naming it."""
import base64
import json
import re
import zlib

import numpy as np
import pytest

from satkern.report import RunFolderError, write_report
from satkern.report.explorer import explorer_div, page

from explorer_checks import synthetic_head_maps
from report_runs import H, L, MODEL, make_analyze


def _payload(html):
    m = re.search(r'<script type="application/json" class="sk-explorer-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_payload_is_the_stored_maps():
    hm = synthetic_head_maps(MODEL, L, H)
    d = _payload(explorer_div(hm))
    assert (d["layers"], d["heads"]) == (L, H) and d["category"] == list(hm.category.reshape(-1))
    for u, p in zip(hm.utterances, d["utts"]):
        q = np.frombuffer(zlib.decompress(base64.b64decode(p["maps"])), dtype=np.uint8).reshape(u.maps_q.shape)
        np.testing.assert_array_equal(q, u.maps_q)
        rm = np.frombuffer(base64.b64decode(p["rowmax"]), dtype="<f4").reshape(u.row_max.shape)
        np.testing.assert_array_equal(rm, u.row_max)
        assert (p["frames"], p["factor"], p["bins"]) == (u.frames, u.factor, u.bins)
        assert [x[2] for x in p["phones"]] == list(u.phone_label)
        np.testing.assert_allclose(p["metrics"]["G"], u.metrics["G"].reshape(-1), rtol=1e-7)


def test_page_is_self_contained():
    hm = synthetic_head_maps(MODEL, L, H)
    hm.utterances[0].uid = "</script><script>alert(1)</script>"  # ids cannot end the data block
    html = page(hm)
    assert "default-src 'none'" in html and "http://" not in html and "https://" not in html
    assert "<script src" not in html and "<link" not in html
    assert html.count("</script>") == 2  # the data block and the explorer's script, nothing injected
    assert _payload(html)["utts"][0]["id"] == hm.utterances[0].uid


def test_bad_head_maps_stop_the_report(tmp_path):
    a = make_analyze(tmp_path / "a")
    (a / "head_maps.npz").write_bytes(b"garbage")
    with pytest.raises(RunFolderError, match="head_maps.npz: corrupt"):
        write_report([a], tmp_path / "r.html")
    other = dict(MODEL, name="another-model", weights_checksum="ffff")
    (a / "head_maps.npz").write_bytes(synthetic_head_maps(other, L, H).to_npz_bytes())
    with pytest.raises(RunFolderError, match="another-model"):
        write_report([a], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    (a / "head_maps.npz").unlink()
    write_report([a], tmp_path / "r.html")
    assert "--head-maps 2" in (tmp_path / "r.html").read_text()  # the missing part names its command
