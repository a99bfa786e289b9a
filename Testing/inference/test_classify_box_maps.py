"""`Classifier.classify(maps_on_ct_grid=False)` (what `serve` sends): each map is exactly the crop box of the
full-size map, placed on the CT grid by its geometry; everything else of the result is the same."""

import numpy as np
import SimpleITK as sitk

from reactkd.inference.classifier import Classifier
from synthetic_images import make_case


def test_box_maps_are_the_crop_box_of_the_full_maps_bit_for_bit():
    ct, mask, _ = make_case(shape_zyx=(36, 58, 62), spacing=(1.3, 1.1, 2.4), tumour_centre_zyx=(17, 27, 33), seed=4)
    classifier = Classifier(device="cpu")
    full = classifier.classify(ct, mask)
    boxed = classifier.classify(ct, mask, maps_on_ct_grid=False)
    assert boxed.probabilities == full.probabilities and boxed.graph == full.graph
    (x0, x1), (y0, y1), (z0, z1) = boxed.preprocessed.crop_index
    assert (x1 - x0, y1 - y0, z1 - z0) != ct.GetSize()  # a real crop, so the test can tell the two apart
    for name in ("attention_cbam", "attention_gradcam"):
        whole, box = getattr(full, name), getattr(boxed, name)
        assert box.GetSize() == (x1 - x0, y1 - y0, z1 - z0)
        assert np.allclose(box.GetOrigin(), whole.TransformIndexToPhysicalPoint((x0, y0, z0)), atol=1e-9)
        assert box.GetSpacing() == whole.GetSpacing() and box.GetDirection() == whole.GetDirection()
        whole_array = sitk.GetArrayFromImage(whole)
        assert np.array_equal(sitk.GetArrayFromImage(box), whole_array[z0:z1, y0:y1, x0:x1])
        whole_array[z0:z1, y0:y1, x0:x1] = 0
        assert not whole_array.any()  # nothing of the full map lies outside the box
