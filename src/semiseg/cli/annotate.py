"""``semiseg annotate``: paint a few slices in the browser, propagate, correct, save."""
from __future__ import annotations

from ..utils import SemisegError


def cmd_annotate(a) -> int:
    try:
        from ..annotate.server import serve  # noqa: PLC0415 - FastAPI and uvicorn only for this command
    except ImportError as e:
        raise SemisegError(f"annotate needs the web extra ({e.name} is missing): pip install -e '.[web]'") from None
    from ..annotate.session import Session  # noqa: PLC0415 - with the server

    if a.run is not None and a.model is not None:
        raise SemisegError("give the propagation run either as RUN or as -m MODEL.zip, not both")
    run = a.run or a.model
    session = Session(a.image, a.out, run=run, labels=a.labels, label_names=a.label_names, axis=a.axis,
                      device=a.device, series_uid=a.series_uid, modality=a.modality)
    m = session.meta()
    print(f"image {' '.join(m['image'])}: {'x'.join(map(str, m['shape']))} voxels; {len(m['labels'])} label(s) "
          f"({', '.join(lab['name'] for lab in m['labels'])}); propagate with {m['method_label']} along the "
          f"{m['slice_view']} slices; {len(m['annotated'])} slice(s) annotated at start")
    serve(session, a.port, a.open)
    return 0


def register(add) -> None:
    p = add("annotate", "Annotate an image in the browser: paint a few slices, propagate them through the "
            "volume with a mask-propagation run (or shape-based interpolation without one), correct any slice, "
            "propagate again, save. Serves one page on 127.0.0.1 until Ctrl+C.", cmd_annotate,
            "unused (torch uses every core)")
    p.add_argument("run", metavar="RUN", nargs="?",
                   help="a `semiseg train --method stcn --config 2d` run (RUN@CHECKPOINT allowed); without it, "
                        "Propagate fills slices by shape-based interpolation")
    p.add_argument("-m", "--model", metavar="MODEL.zip", help="the propagation run exported by `semiseg export`")
    p.add_argument("-i", "--image", required=True, nargs="+", metavar="FILE",
                   help="the image: one file per channel (CASE_0000.ext ...), or a DICOM series folder")
    p.add_argument("--series-uid", help="with a DICOM folder that holds several series: the one to use")
    p.add_argument("--labels", metavar="FILE", help="a label map to start from (its labeled slices count as "
                   "annotated); pass the output file here to continue an earlier session")
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="where Save writes the label map, in the image's geometry (atomically; not in an input's "
                        "folder; its ending picks the format: .nii.gz, .nrrd, .mha)")
    p.add_argument("--label-names", nargs="+", metavar="NAME",
                   help="names of labels 1, 2, ... (default: the run's dataset labels, else 'label 1')")
    p.add_argument("--axis", type=int, choices=[0, 1, 2], help="the slice axis propagation runs along, in the "
                   "image's array order (z=0, y=1, x=2; default: the run's, else the lowest-resolution axis)")
    p.add_argument("--modality", choices=["auto", "ct", "mr", "other"], default="auto",
                   help="window presets: ct offers the plan's range and abdomen/chest/bone windows (default: from "
                        "the run's plan, else CT when the image holds Hounsfield-like values below -500)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--device", help="torch device (default cuda when available)")
