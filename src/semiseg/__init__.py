"""semiseg: semi-supervised 3D medical image segmentation on nnU-Net v2 raw datasets.

The Python API has the shape of the command line (each subcommand is a thin layer over it)::

    import semiseg
    report = semiseg.check("DATASET")            # semiseg check DATASET
    plans = semiseg.plan("DATASET", "WORK")      # semiseg plan DATASET -o WORK
    semiseg.preprocess("WORK")                   # semiseg preprocess WORK
    summary = semiseg.evaluate("PRED", "GT")     # semiseg evaluate PRED GT
    semiseg.demo("semiseg_demo")                 # semiseg demo

The packages follow the pipeline, each importing only those below it (checked by import-linter):
``cli`` > ``workflows`` > ``training`` > ``pseudolabels`` | ``methods`` > ``propagation`` >
``inference`` > ``nets`` > ``preprocessing`` | ``evaluation`` > ``planning`` > ``data`` > ``utils``.
The API functions are imported on first use so that ``import semiseg`` stays light.
"""
import importlib

__version__ = "0.1.0"

_API = {
    "check": ("data.checking", "check_dataset"),
    "plan": ("planning.plans", "plan"),
    "preprocess": ("preprocessing.cache", "preprocess"),
    "evaluate": ("evaluation.metrics", "evaluate"),
    "train": ("training.engine", "train"),
    "predict": ("inference.predict", "predict_folder"),
    "pseudolabel": ("pseudolabels.pseudolabel", "pseudolabel_folder"),
    "propagate": ("propagation.files", "propagate_file"),
    "selftrain": ("workflows.selftrain", "selftrain"),
    "demo": ("workflows.demo", "run_demo"),
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        mod, fn = _API[name]
        return getattr(importlib.import_module(f".{mod}", __name__), fn)
    raise AttributeError(f"module 'semiseg' has no attribute {name!r}")
