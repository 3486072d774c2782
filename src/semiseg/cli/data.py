"""``semiseg check | plan | preprocess | evaluate``: the dataset side of the pipeline."""
from __future__ import annotations

from ..data.checking import check_dataset
from ..evaluation.metrics import evaluate, format_table
from ..planning import Configuration, load_split, plan
from ..preprocessing import preprocess
from ..utils import write_json
from .common import add_split_args, progress


def cmd_check(a) -> int:
    rep = check_dataset(a.dataset, workers=a.workers, progress=progress(a), tolerance=a.tolerance)
    for p in rep.problems:
        print(p)
    print(rep.summary())
    if a.json:
        write_json(rep.to_dict(), a.json)
    return 0 if rep.ok else 1


def cmd_plan(a) -> int:
    p = plan(a.dataset, a.out, labeled=a.labeled, labeled_list=a.labeled_list, labeled_key=a.labeled_key,
             fold=a.fold, memory_gb=a.memory_gb, seconds_per_iteration=a.seconds_per_iteration or None,
             gpu_memory_gb=a.gpu_memory_gb, base_features=a.base_features, ct_stats=a.ct_stats,
             ct_windows=a.ct_windows, forced_spacing=a.forced_spacing, forced_spacing_rule=a.forced_spacing_rule,
             workers=a.workers, progress=progress(a), student=a.student, spacing_factor=a.spacing_factor)
    s = load_split(a.out)
    print(f"{p['dataset']}: {len(s.labeled)} labeled, {len(s.unlabeled)} unlabeled, {len(s.val)} "
          f"validation cases ({s.how})")
    print(f"target spacing (z, y, x) {[round(x, 4) for x in p.target_spacing]} mm: {p['target_spacing_why']}")
    for n in p.normalization:
        print(f"channel {n['channel']}: {n['scheme']} - {n['why']}")
    for name in p["configurations"]:
        c = p.configuration(name)
        g = Configuration(c["gpu"])
        print(f"{name}: patch {c.patch_size} batch {c.batch_size} stages {c.n_stages} "
              f"(~{c['estimated_memory_gb']} GB, ~{c['estimated_seconds_per_iteration']} s/it on this CPU); "
              f"on a {p['budget']['gpu']['memory_gb']:g} GB GPU: patch {g.patch_size} batch {g.batch_size} "
              f"stages {g.n_stages}")
        print(f"    why: {c['why']}")
    print(f"wrote {a.out}/plans.json")
    return 0


def cmd_preprocess(a) -> int:
    c = preprocess(a.work, workers=a.workers, progress=progress(a))
    print(f"preprocessed {c['done']} cases, skipped {c['skipped']} already done -> {a.work}/preprocessed")
    return 0


def cmd_evaluate(a) -> int:
    s = evaluate(a.pred, a.gt, dataset_json=a.dataset_json, tolerance=a.tolerance, out=a.out,
                 missing_as_empty=a.missing_as_empty, only_predicted=a.only_predicted, workers=a.workers,
                 progress=progress(a))
    print(format_table(s))
    print(f"{s['n_cases']} cases; per-case metrics.csv and summary.json in {a.out or a.pred}")
    return 0


def register(add) -> None:
    p = add("check", "Check an nnU-Net v2 raw dataset; exit code 1 if it has errors.", cmd_check)
    p.add_argument("dataset")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="geometry tolerance: relative for spacing, x largest spacing for origin (default 1e-4)")

    p = add("plan", "Fingerprint a dataset and write WORK/plans.json (2D and 3D configurations).", cmd_plan)
    p.add_argument("dataset")
    p.add_argument("-o", "--out", required=True, metavar="WORK", help="work folder (created)")
    add_split_args(p)
    p.add_argument("--memory-gb", type=float, default=8.0, help="training memory budget on this machine (default 8)")
    p.add_argument("--seconds-per-iteration", type=float, default=2.0,
                   help="compute budget per training iteration on the CPU (default 2; 0 = none)")
    p.add_argument("--gpu-memory-gb", type=float, default=10.0, help="GPU memory for the GPU variant (default 10)")
    p.add_argument("--base-features", type=int, default=None, help="U-Net base width (default 16 CPU, 32 GPU)")
    p.add_argument("--ct-stats", choices=["foreground", "all"], default=None,
                   help="CT normalisation statistics: labeled foreground (nnU-Net) or all voxels of all "
                        "scans (Huang et al. 2022); default foreground, or all when nothing is labeled")
    p.add_argument("--ct-windows", metavar="SPEC",
                   help="CT windowing into channels: 'abdomen,chest,bone' or 'name:level:width,...'")
    p.add_argument("--forced-spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="forced inference spacing in mm (0 keeps the image's own on that axis; Huang et al. 2022)")
    p.add_argument("--forced-spacing-rule", choices=["fixed", "slices"], default="fixed",
                   help="'slices': Huang et al.'s slice-count rule for the z spacing")
    p.add_argument("--student", action="store_true",
                   help="plan the small fast student of Chen et al. 2023: 1.5x coarser spacing, half the widths "
                        "(8 base features on CPU, 16 on GPU), at most 256, inference step 0.8 and no TTA")
    p.add_argument("--spacing-factor", type=float, metavar="F",
                   help="target spacing F times coarser than nnU-Net's rule (default 1, student 1.5)")

    p = add("preprocess", "Crop, normalise, resample and cache every case of WORK (resumable).", cmd_preprocess)
    p.add_argument("work")

    p = add("evaluate", "DSC, NSD, HD95 and ASD per case and class; metrics.csv + summary.json.", cmd_evaluate)
    p.add_argument("pred", metavar="PRED_DIR")
    p.add_argument("gt", metavar="GT_DIR")
    p.add_argument("--dataset-json", help="class/region names (default: GT_DIR/../dataset.json if present)")
    p.add_argument("--tolerance", default="2", help="NSD tolerance in mm: '2' or 'liver=5,spleen=2' (default 2)")
    p.add_argument("-o", "--out", help="where to write metrics.csv and summary.json (default PRED_DIR)")
    p.add_argument("--missing-as-empty", action="store_true", help="score missing predictions as empty masks")
    p.add_argument("--only-predicted", action="store_true", help="score only references that have a prediction")
