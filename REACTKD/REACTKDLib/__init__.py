"""Slicer-side parts of the REACTKD module kept out of REACTKD.py (imports nothing: Slicer and the tests load
the submodules they need): the widget, parameter node, logic and self-test (Slicer only), and the Qt-free
scene code that imports only `slicer` (scene_inputs, result_nodes, totalsegmentator, sample_data,
first_use), tested headless against slicer-core."""
