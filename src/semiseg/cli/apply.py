"""``semiseg predict | pseudolabel | propagate``: trained runs applied to images."""
from __future__ import annotations

import argparse
import statistics

from ..inference.predict import OUTPUT_FORMATS, predict_folder
from ..propagation.files import propagate_file
from ..pseudolabels.pseudolabel import pseudolabel_folder
from ..utils import SemisegError
from ..utils.device import AMP_CHOICES
from .common import add_model_args, model_specs, progress, record_runs


def cmd_predict(a) -> int:
    specs = model_specs(a)
    record_runs(a.runs)
    r = predict_folder(specs, a.input, a.out, checkpoint=a.checkpoint, nets=a.nets, step=a.step, tta=a.tta,
                       forced_spacing=a.forced_spacing, save_probabilities=a.save_probabilities,
                       largest_component=a.largest_component, overwrite=a.overwrite, profile=a.profile,
                       device=a.device, progress=progress(a), amp=a.amp, backend=a.backend,
                       series_uid=a.series_uid, output_format=a.output_format, stop_on_error=a.stop_on_error)
    print(f"predicted {r['done']} cases, skipped {r['skipped']} already done -> {r['out']}")
    if a.profile and r["rows"]:
        secs = [x["seconds"] for x in r["rows"]]
        print(f"median {statistics.median(secs):.2f} s per case, peak RSS "
              f"{max(x['peak_rss_mb'] for x in r['rows']):.0f} MB "
              f"-> {a.profile}")
    return 0


def cmd_pseudolabel(a) -> int:
    specs = model_specs(a)
    record_runs(a.runs)
    r = pseudolabel_folder(specs, a.input, a.out, checkpoint=a.checkpoint, nets=a.nets, step=a.step,
                           tta_members=a.tta_members, num_parts=a.num_parts, part_id=a.part_id,
                           overwrite=a.overwrite, device=a.device, progress=progress(a), backend=a.backend,
                           stop_on_error=a.stop_on_error)
    print(f"part {r['part'] + 1}/{r['parts']}: pseudo-labeled {r['done']} scans with {r['members']} ensemble "
          f"members, skipped {r['skipped']} already done -> {a.out}; "
          + (f"scores in {r['scores']}" if r["scores"] else "scores.csv comes when every part has finished"))
    return 0


def cmd_propagate(a) -> int:
    slices = None
    if a.slices:
        try:
            slices = [int(v) for v in a.slices.split(",") if v.strip()]
        except ValueError:
            raise SemisegError(f"--slices {a.slices!r}: give slice indices separated by commas, e.g. 12,30,48") \
                from None
    if a.reference and (a.slices or a.axis is not None):
        raise SemisegError("--slices and --axis are for --labels (interactive propagation)")
    if (a.run is None) == (a.model is None):
        raise SemisegError("give the propagation run either as RUN or as -m MODEL.zip")
    run = a.run or a.model
    record_runs([run, *(a.reference or [])])
    r = propagate_file(run, a.image, a.out, a.labels, slices, a.axis, "best", a.recent, a.reference, a.k,
                       a.ref_rule, a.ref_count, a.device, a.series_uid)
    src = (f"slices {r['slices']}" if a.labels else
           f"the Reference module's slices {r['references']} (of {len(r['sampled'])} sampled)")
    print(f"propagated classes {r['classes']} from {src} (axis {r['axis']}) in {r['seconds']:.1f} s"
          + (f"; ignored slices outside the image's extent: {r['ignored_slices']}" if r.get("ignored_slices") else "")
          + f" -> {r['out']}")
    return 0


def register(add) -> None:
    p = add("predict", "Predict images with one or more trained runs (ensemble) into OUT_DIR.", cmd_predict,
            "unused (prediction runs in one process; torch uses every core)")
    add_model_args(p, "run folder(s); several = an ensemble; RUN@final picks a checkpoint per run",
                   "images, nnU-Net naming CASE_0000.ext")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="mirroring test-time augmentation (8x in 3D; default: off, or the model file's setting)")
    p.add_argument("--forced-spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="resample inputs to this spacing before prediction (default: the plan's)")
    p.add_argument("--save-probabilities", action="store_true", help="also write CASE.npz with the probabilities")
    p.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=None,
                   help="keep each class's largest component (default: the steps the run chose on its "
                        "validation cases for its best checkpoint, postprocessing.json; or the model file's setting)")
    p.add_argument("--overwrite", action="store_true", help="predict cases that already have an output")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first case that cannot be read "
                   "(default: predict the others, list the bad ones at the end, exit code 2)")
    p.add_argument("--profile", metavar="CSV", help="write seconds, peak RSS (and GPU) memory per case")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help="mixed precision (auto: fp16 on CUDA; on a CPU, the precision the run measured faster on "
                        "this host, or bf16 where a short convolution probe finds it faster; off: float32)")
    p.add_argument("--series-uid", help="with a DICOM folder that holds several series: the one to predict")
    p.add_argument("--output-format", choices=OUTPUT_FORMATS, default="image",
                   help="image: label maps in the plan's file format (default); dicom-seg: CASE.dcm, a DICOM SEG "
                        "referencing the input series (DICOM input only)")

    p = add("pseudolabel", "Pseudo-label scans with an ensemble and score each by the members' consensus "
            "(Pham et al. 2022, eq. 2) into OUT_DIR/scores.csv (resumable, shardable).", cmd_pseudolabel,
            "unused (one process per shard; torch uses every core)")
    add_model_args(p, "run folder(s), RUN@CHECKPOINT allowed; every network of every run is a member",
                   "unlabeled images, CASE_0000.ext")
    p.add_argument("--tta-members", action="store_true", help="each mirroring of each network is a member")
    p.add_argument("--num-parts", type=int, help="split the scans into this many shards (default: torchrun's "
                   "WORLD_SIZE or 1)")
    p.add_argument("--part-id", type=int, help="this process's shard (default: torchrun's RANK or 0)")
    p.add_argument("--overwrite", action="store_true", help="redo scans that already have a pseudo-label")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first scan that cannot be read "
                   "(default: pseudo-label the others, list the bad ones at the end, exit code 2)")

    p = add("propagate", "Fill a volume from a few labeled slices with a mask-propagation run (Pham et al. "
            "2022): slices a person annotated (--labels) or that a Reference module segmented (--reference); "
            "every class is carried through the volume, both ways.", cmd_propagate, "unused (torch uses every core)")
    p.add_argument("run", metavar="RUN", nargs="?",
                   help="a `semiseg train --method stcn --config 2d` run (RUN@CHECKPOINT allowed)")
    p.add_argument("-m", "--model", metavar="MODEL.zip", help="the propagation run exported by `semiseg export`")
    p.add_argument("-i", "--image", required=True, nargs="+", metavar="FILE",
                   help="the image: one file per channel (CASE_0000.ext ...), or a DICOM series folder")
    p.add_argument("--series-uid", help="with a DICOM folder that holds several series: the one to use")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--labels", metavar="FILE",
                   help="interactive: a label map in the image's geometry in which some slices are annotated (any "
                        "classes); add or correct slices and run again to re-propagate")
    g.add_argument("--reference", nargs="+", metavar="RUN",
                   help="automatic: the Reference module, 2D run(s) on the same work folder (e.g. a 2D CPS pair; "
                        "RUN@CHECKPOINT or MODEL.zip allowed) that segment --k sampled slices; the chosen ones are "
                        "propagated")
    p.add_argument("--k", type=int, default=9, help="automatic: slices sampled uniformly for the Reference module "
                   "(default 9)")
    p.add_argument("--ref-rule", choices=["largest", "per_class"], default="largest",
                   help="automatic: which masks become references: the --ref-count with the largest organ area "
                        "(default) or, per class, the slice where it is largest")
    p.add_argument("--ref-count", type=int, default=3, help="automatic: references for --ref-rule largest (default 3)")
    p.add_argument("--slices", metavar="K,K,...", help="the annotated slice indices (default: every slice holding "
                   "a label; list a slice to say it is annotated as empty)")
    p.add_argument("--axis", type=int, choices=[0, 1, 2], help="slice axis of the arrays (z=0, y=1, x=2; default: "
                   "the run's, the plan's lowest-resolution axis)")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the propagated label map (written atomically)")
    p.add_argument("--recent", type=int, default=3, help="predicted slices kept in memory beside the annotated ones "
                   "(default 3)")
    p.add_argument("--device", help="torch device (default cuda when available)")
