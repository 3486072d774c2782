"""semiseg: semi-supervised 3D medical image segmentation on nnU-Net v2 raw datasets.

The Python API has the shape of the command line (each subcommand is a thin layer over it)::

    import semiseg
    report = semiseg.check("DATASET")            # semiseg check DATASET
    plans = semiseg.plan("DATASET", "WORK")      # semiseg plan DATASET -o WORK
    semiseg.preprocess("WORK")                   # semiseg preprocess WORK
    summary = semiseg.evaluate("PRED", "GT")     # semiseg evaluate PRED GT
    semiseg.demo("semiseg_demo")                 # semiseg demo

Modules: ``io`` (images + geometry), ``dataset`` (nnU-Net raw layout, splits), ``checking``,
``planning`` (fingerprint, plans.json), ``preprocessing`` (cache, inverse mapping), ``metrics``
(DSC/NSD/HD95/ASD, evaluate), ``profile`` (time/memory sampling), ``synthetic`` (phantoms, demo).
The API functions are imported lazily so that ``semiseg --help`` stays fast.
"""
__version__ = "0.1.0"

_API = {
    "check": ("checking", "check_dataset"),
    "plan": ("planning", "plan"),
    "preprocess": ("preprocessing", "preprocess"),
    "evaluate": ("metrics", "evaluate"),
    "train": ("engine", "train"),
    "predict": ("infer", "predict_folder"),
    "pseudolabel": ("pseudolabel", "pseudolabel_folder"),
    "demo": ("synthetic", "run_demo"),
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        mod, fn = _API[name]
        return getattr(importlib.import_module(f".{mod}", __name__), fn)
    raise AttributeError(f"module 'semiseg' has no attribute {name!r}")
