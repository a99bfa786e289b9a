"""report.html: self-contained, escaped, and (in a real headless browser) every picture renders and nothing
is requested from outside the file."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from model_packages import make_package
from reactkd.cohort.synth import generate_case
from reactkd.inference.case_report import POLICY, REPORT_FILE, tumour_slices
from reactkd.inference.classifier import Classifier
from reactkd.inference.outputs import write_outputs

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    case = generate_case(3, 2, size="small")
    result = Classifier(make_package(tmp_path_factory.mktemp("model") / "p"), device="cpu").classify(case.ct, case.mask)
    result.warnings.append("a <b>bold</b> claim & more")  # text from inputs must never become markup
    out = tmp_path_factory.mktemp("out")
    write_outputs(result, out, case.ct, case.mask, render=False)
    return out / REPORT_FILE, result


def test_the_report_is_self_contained_and_escapes_text(report):
    path, result = report
    text = path.read_text()
    parser = Elements()
    parser.feed(text)
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:)", text) and "url(" not in text
    assert any(tag == "meta" and attrs.get("content") == POLICY for tag, attrs in parser.tags)
    assert "a &lt;b&gt;bold&lt;/b&gt; claim &amp; more" in text and "<b>bold" not in text
    for needed in (result.grade, result.prediction_set_text, result.model["sha256"], "Not a medical device"):
        assert needed in text


def test_tumour_slices_pick_the_largest_area_then_spread():
    import numpy as np

    mask = np.zeros((20, 8, 8), dtype=np.uint8)
    mask[5:15, 2:4, 2:4] = 2
    mask[9, 1:7, 1:7] = 2
    largest, slices = tumour_slices(mask)
    assert largest == 9 and 9 in slices and len(slices) == 3 and slices == sorted(slices)
    assert all(5 <= z < 15 for z in slices)
    assert tumour_slices(np.ones((4, 4, 4), dtype=np.uint8)) == (None, [])


PROBE = """<script>
const violations = [];
document.addEventListener('securitypolicyviolation', e => violations.push(e.blockedURI));
window.addEventListener('load', () => setTimeout(() => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.rendered = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.violations = violations.length;
}, 200));
</script>"""


def browse(path, tmp_path, extra: str = "") -> dict[str, int]:
    """Open a copy of the report (with a probe script allowed in) headless; the probe's findings."""
    text = path.read_text().replace(POLICY, POLICY + "; script-src 'unsafe-inline'")
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", extra + PROBE + "</body>"))
    dom = subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = dict(re.findall(r'data-(images|rendered|violations)="(\d+)"', dom))
    assert found, f"the browser did not run the probe: {dom[:300]!r}"
    return {key: int(value) for key, value in found.items()}


@pytest.mark.skipif(BROWSER is None, reason="needs Debian's chromium (make test installs it)")
def test_a_real_browser_renders_every_picture_and_requests_nothing(report, tmp_path):
    path, _ = report
    seen = browse(path, tmp_path)
    assert seen["images"] >= 2 and seen["rendered"] == seen["images"] and seen["violations"] == 0
    # The probe sees a request when there is one: an outside picture is blocked by the page's policy.
    leaky = browse(path, tmp_path, extra='<img src="http://example.invalid/x.png">')
    assert leaky["violations"] >= 1 and leaky["rendered"] == leaky["images"] - 1


def test_axis_aligned_grids_are_viewed_in_display_order_without_a_copy():
    import itertools

    import numpy as np
    import SimpleITK as sitk

    from reactkd.inference.case_report import _axial

    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32))
    for perm, signs in itertools.product(itertools.permutations(range(3)), itertools.product([1, -1], repeat=3)):
        direction = np.zeros((3, 3))
        direction[np.arange(3), perm] = signs
        image.SetDirection(direction.ravel().tolist())
        got = _axial(image)
        assert np.array_equal(got, sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")))
        assert not got.flags.owndata  # a view
    tilted = sitk.Image(image)
    angle = np.deg2rad(10)
    tilted.SetDirection([1, 0, 0, 0, np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle)])
    assert _axial(tilted).shape == sitk.GetArrayFromImage(sitk.DICOMOrient(tilted, "LPS")).shape
