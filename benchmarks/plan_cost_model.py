"""Does the planner's cost model (memory, seconds per iteration) match reality on this machine?

For each dataset's 3D and 2D plan (written by `semiseg plan` into benchmarks/_work/plans/NAME),
build the planned U-Net (the registry's `dynunet`: MONAI DynUNet with the planned kernels,
strides and features, deep supervision, instance norm), run a few training iterations (SGD, Dice+CE on random data of the
planned patch and batch) in a fresh process, and compare the measured seconds per iteration and
peak RSS with the plan's estimates. Rows go to benchmarks/cost_model.csv.

    python benchmarks/plan_cost_model.py [--datasets LA ACDC] [--iters 4]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _common import DATA, HERE, append_csv


def one(plans_path: str, config: str, iters: int) -> dict:
    import torch
    from monai.losses import DiceCELoss

    from semiseg.nets import create_network

    torch.set_num_threads(os.cpu_count() or 1)
    p = json.load(open(plans_path))
    c = p["configurations"][config]
    net = create_network("dynunet", c, p["num_input_channels"], p["num_classes"])
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    b = c["batch_size"]
    x = torch.randn(b, p["num_input_channels"], *c["patch_size"])
    y = torch.randint(0, p["num_classes"], (b, 1, *c["patch_size"]))
    times = []
    for i in range(iters + 1):
        t = time.perf_counter()
        out = net(x)
        l = sum(loss(out[:, k], y) * 0.5 ** k for k in range(out.shape[1]))
        opt.zero_grad()
        l.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"measured_s_per_it": sorted(times[1:])[len(times[1:]) // 2], "measured_peak_rss_mb": rss,
            "estimated_s_per_it": c["estimated_seconds_per_iteration"],
            "estimated_memory_mb": c["estimated_memory_gb"] * 1000, "patch": c["patch_size"], "batch": b}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="*", default=["LA", "ACDC", "BraTS-mini", "CHAOS-MR"])
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--_one", nargs=2)
    a = ap.parse_args()
    if a._one:
        print(json.dumps(one(a._one[0], a._one[1], a.iters)))
        return
    rows = []
    for d in a.datasets:
        work = HERE / "_work" / "plans" / d
        subprocess.run([sys.executable, "-m", "semiseg", "plan", str(DATA / d), "-o", str(work), "-q"],
                       check=True, stdout=subprocess.DEVNULL)
        for cfg in ("3d", "2d"):
            r = subprocess.run([sys.executable, __file__, "--_one", str(work / "plans.json"), cfg,
                                "--iters", str(a.iters)], capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:])
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            m.update(dataset=d, config=cfg)
            print(m)
            rows.append(m)
    append_csv(HERE / "cost_model.csv", ["date", "commit", "dataset", "config", "patch", "batch",
                                          "estimated_s_per_it", "measured_s_per_it", "estimated_memory_mb",
                                          "measured_peak_rss_mb"], rows)


if __name__ == "__main__":
    main()
