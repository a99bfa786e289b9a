"""REACTKDTest: the module's self-test inside Slicer (Reload and Test, or ctest's py_REACTKD)."""

import logging
import time
import unittest

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from .logic import REACTKDLogic


class REACTKDTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: Reload and Test calls `runTest`; ctest's py_REACTKD (``slicer.testing.runUnitTest``)
    runs each ``test_*`` method through unittest and never calls `runTest`. So every test guards itself: a
    missing requirement is a skip (unittest reports it), and `runTest` logs a skip instead of failing on it."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_catalogue_lists_shipped_model, self.test_sample_case_segments_found,
                     self.test_classify_sample_case):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skipped:  # Reload and Test has no runner to report it: a skip, not a failure
                logging.warning("REACT-KD self-test: %s skipped: %s", test.__name__, skipped)
                self.delayDisplay(f"Skipped: {skipped}")

    def _skipWithoutClassification(self):
        from reactkd.dependencies import install_plan

        missing = install_plan("classify").describe()
        if missing:  # e.g. the extension build server: no torch, MONAI or scikit-learn there
            self.skipTest(f"classification skipped: not installed: {missing}")

    def test_catalogue_lists_shipped_model(self):
        self.delayDisplay("Model catalogue")
        names = [entry.name for entry in REACTKDLogic().modelCatalog().shipped_entries()]
        logging.info("shipped models: %s", names)
        self.assertIn("reactkd-demo-student", names)

    def test_sample_case_segments_found(self):
        self.delayDisplay("Sample case and segment picking")
        from .sample_data import load_sample_case

        sample = load_sample_case(slicer.mrmlScene)
        self.assertEqual(REACTKDLogic().findSegmentIds(sample.segmentation), ("liver", "tumour"))

    def test_classify_sample_case(self):
        self._skipWithoutClassification()
        self.delayDisplay("Classify the sample case with the shipped model")
        self._classifySampleCase()

    def _classifySampleCase(self):
        from .sample_data import load_sample_case

        logic = REACTKDLogic()
        entry = logic.modelCatalog().default_entry()
        if entry is None:
            self.skipTest("no installed model")
        sample = load_sample_case(slicer.mrmlScene)
        parameters = logic.getParameterNode()
        parameters.ctVolume, parameters.segmentation = sample.ct, sample.segmentation
        job = logic.startClassification(entry.path, "auto", logic.inputsFromParameters(parameters))
        while not job.done:
            slicer.app.processEvents()
            time.sleep(0.02)
        logic.shutdown()
        result = job.result()
        before = slicer.mrmlScene.GetNumberOfNodes()
        nodes = logic.showResult(sample.ct, result, sample.segmentation)
        self.assertAlmostEqual(sum(result.probabilities.values()), 1.0, places=4)
        self.assertEqual(len(nodes.attention), 2)
        logic.removeResult(nodes)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.delayDisplay("Test passed")
