"""The project's shared names, one home each: grades, image channels, heads, training stages, mask label codes,
file names and where the package's own data lives. Pure constants: importing this loads nothing."""

from pathlib import Path

#: Recorded grades, in ordinal order (index = class label).
CLASS_NAMES = ("well", "moderate", "poor")
#: Image channels, in order, of every model input tensor (B, 3, D, H, W).
MODALITIES = ("ct", "pet_fdg", "pet_act")
#: Input combinations a model is evaluated (and a case is asked "what if") on: name -> flag per MODALITIES channel.
MODALITY_SUBSETS = {"ct": (True, False, False), "ct+fdg": (True, True, False), "ct+act": (True, False, True),
                    "all": (True, True, True)}
#: Classification heads: region-aware pooling (default) or the paper's global average pooling.
HEADS = ("region", "global")
#: Training stages, as the command line and package metadata spell them.
TEACHER_SF, TEACHER_DOSE, STUDENT = "teacher-sf", "teacher-dose", "student"
STAGES = (TEACHER_SF, TEACHER_DOSE, STUDENT)

#: Codes of an input label map (``--mask``): where liver and tumour overlap in two binary masks, tumour wins.
BACKGROUND_CODE, LIVER_CODE, TUMOUR_CODE = 0, 1, 2
#: Codes of a region label map (graph nodes): liver parcels, the peritumoral ring, tumours from 3 upwards.
LIVER_LABEL, RING_LABEL, FIRST_TUMOUR_LABEL = 1, 2, 3

#: What every model package and case report says it is for.
INTENDED_USE = "Research on HCC grading. Not a medical device; not for clinical use."

#: Files of a model package.
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
#: The result of one classification (beside its attention maps, graph.json and the scene files).
RESULT_FILE = "result.json"

#: Data shipped inside the package: model packages, their list (Models.json), its schema, requirement files.
DATA_DIR = Path(__file__).resolve().parent / "data"
#: The model `classify` uses when none is named: the shipped CT student.
DEFAULT_MODEL = DATA_DIR / "models" / "reactkd-demo-student"
