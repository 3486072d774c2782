"""Where a training step's time goes, and what makes more steps per minute, per configuration.

For each configuration (LA default plan 3D, LA student plan 3D, ACDC 2D at patch 160 batch 8) this
builds the engine's real parts (``training.engine.prepare`` / ``build``: the method, the networks, the
optimizer, the patch sampler with its augmentation) and measures, each variant in a fresh process
pinned to its cores (so thread settings and ``OMP_WAIT_POLICY`` take effect):

- the phases of one step, in this process: loading + augmentation of a batch, forward (the method's
  losses under autocast), backward, optimizer; medians over the timed steps;
- the whole step as the engine runs it (``engine.step`` fed by the real loader with its worker), steps
  per minute, and the mean loss of the last steps from the same seed (a worse curve shows there);
- the validation's share of a time budget follows ``training.budget.validation_gap`` (at most a tenth),
  so it is reported from one timed validation.

Variants: ``fp32`` / ``bf16`` autocast, compute threads 1 or 2 (cores 1 or 2), ``OMP_WAIT_POLICY``
passive, ``channels_last`` (3D) and ``torch.compile`` of the training forward (fixed shapes; compile
time reported apart). Appends one row per configuration and variant to results.csv (benchmark
``step_profile``) and prints a table.

    python benchmarks/step_profile.py                       # every configuration, the default variants
    python benchmarks/step_profile.py --configs la-student --variants fp32,bf16 --steps 20
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import append_rows, prepared_work

CONFIGS = {
    "la-default": {"dataset": "LA", "student": False, "configuration": "3d", "extra": {}},
    "la-student": {"dataset": "LA", "student": True, "configuration": "3d", "extra": {}},
    "acdc-2d": {"dataset": "ACDC", "student": False, "configuration": "2d",
                "extra": {"patch_size": [160, 160], "batch_size": 8}},
}
# name -> (amp, cores, env, options)
VARIANTS = {
    "fp32": ("off", 1, {}, {}),
    "bf16": ("bf16", 1, {}, {}),
    # oneDNN capped below AVX512-BF16/AMX: a host that emulates bf16 (most AVX-512 servers), on this one
    "fp32-emulated": ("off", 1, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, {}),
    "bf16-emulated": ("bf16", 1, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, {}),
    "fp32-2cores": ("off", 2, {}, {}),
    "bf16-2cores": ("bf16", 2, {}, {}),
    "fp32-passive": ("off", 1, {"OMP_WAIT_POLICY": "PASSIVE"}, {}),
    "fp32-channels-last": ("off", 1, {}, {"channels_last": True}),
    "fp32-compile": ("off", 1, {}, {"compile": True}),
    "bf16-compile": ("bf16", 1, {}, {"compile": True}),
}
DEFAULT_VARIANTS = "fp32,bf16,fp32-emulated,bf16-emulated,fp32-2cores,bf16-2cores,fp32-passive,fp32-channels-last"


def child(a) -> dict:
    """One configuration and variant, in this process (pinned by the parent)."""
    import numpy as np
    import torch

    from semiseg.training import TrainConfig
    from semiseg.training.budget import RunBudget
    from semiseg.training.engine import build, prepare, step, validate
    from semiseg.training.sampling import batch_loader
    from semiseg.training.state import TrainState
    from semiseg.utils.device import autocast

    c = CONFIGS[a.config]
    amp, cores, _env, opts = VARIANTS[a.variant]
    torch.set_num_threads(cores)
    work = prepared_work(c["dataset"], c["student"])
    cfg = TrainConfig(configuration=c["configuration"], iterations=10_000, amp=amp, seed=0, val_every=0,
                      workers=1, **c["extra"])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        s = prepare(work, Path(tmp) / "run", cfg, resume=False, progress=False)
        p = build(s)
        if opts.get("channels_last") and len(s.net_cfg["patch_size"]) == 3:
            for n in p.nets.values():
                n.to(memory_format=torch.channels_last_3d)
        if opts.get("compile"):
            t0 = time.time()
            p.train_nets = {k: torch.compile(n) for k, n in p.train_nets.items()}
            out["compile_note"] = "compiled lazily at the first steps"
            out["compile_start_s"] = time.time() - t0
        # phases, in this process (no loader worker)
        net = p.train_nets["net"]
        load, fwd, bwd, opt = [], [], [], []
        for i in range(a.phase_steps):
            t0 = time.perf_counter()
            batch = p.data[i]
            t1 = time.perf_counter()
            o = p.optims["net"]
            o.zero_grad(set_to_none=True)
            with autocast(s.device, amp):
                loss = p.method.losses(p.train_nets, batch, {"iteration": i, "progress": 0.0,
                                                             "backward": lambda x: x.backward()})["loss"]
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            o.step()
            t4 = time.perf_counter()
            if i >= 2:  # the first steps warm up (and compile)
                load.append(t1 - t0)
                fwd.append(t2 - t1)
                bwd.append(t3 - t2)
                opt.append(t4 - t3)
            else:
                out.setdefault("warmup_s", []).append(t4 - t0)
        out.update(load_s=statistics.median(load), forward_s=statistics.median(fwd),
                   backward_s=statistics.median(bwd), optimizer_s=statistics.median(opt))
    # the engine's step with its loader worker, from fresh weights of the same seed
    with tempfile.TemporaryDirectory() as tmp:
        s = prepare(work, Path(tmp) / "run", cfg, resume=False, progress=False)
        s.precision = {"amp": amp}  # the variant's precision, as a run that asked for it
        p = build(s)
        if opts.get("channels_last") and len(s.net_cfg["patch_size"]) == 3:
            for n in p.nets.values():
                n.to(memory_format=torch.channels_last_3d)
        if opts.get("compile"):
            p.train_nets = {k: torch.compile(n) for k, n in p.train_nets.items()}
        st, budget = TrainState(), RunBudget(a.steps + 3, None, 0)
        loader = batch_loader(p.data, 0, p.workers)
        losses, times = [], []
        for i in range(a.steps + 3):
            t0 = time.perf_counter()
            step(s, p, st, next(loader), budget)
            times.append(time.perf_counter() - t0)
            losses.append(float(np.mean(st.window["loss"][-1:])))
        timed = times[3:]
        out.update(step_s=statistics.median(timed), steps_per_min=60 / statistics.median(timed),
                   loss_last=float(np.mean(losses[-max(3, a.steps // 4):])), steps=len(losses))
        if a.variant in ("fp32", "bf16"):  # one validation's cost (the budget rule caps its share)
            t0 = time.time()
            validate([p.nets["net"]], work, s.val[:a.val_cases], s.net_cfg, s.plans.num_classes, 0.5, s.device, amp)
            out["validation_s_per_case"] = (time.time() - t0) / min(a.val_cases, len(s.val))
            out["val_cases"] = len(s.val)
    return out


def parent(a) -> None:

    from semiseg.utils.device import cpu_info

    flags = " ".join(sorted(cpu_info()[1] & {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "avx2"}))
    rows, table = [], []
    for config in a.configs.split(","):
        prepared_work(CONFIGS[config]["dataset"], CONFIGS[config]["student"])  # once, before any timing
        for variant in a.variants.split(","):
            amp, cores, env, _ = VARIANTS[variant]
            cpus = ",".join(str(i) for i in range(cores))
            cmd = ["taskset", "-c", cpus, sys.executable, __file__, "--child", "--config", config, "--variant", variant,
                   "--steps", str(a.steps), "--phase-steps", str(a.phase_steps), "--val-cases", str(a.val_cases)]
            envv = dict(os.environ, OMP_NUM_THREADS=str(cores), **env)
            t0 = time.time()
            p = subprocess.run(cmd, env=envv, capture_output=True, text=True)
            if p.returncode:
                print(f"{config} {variant}: failed\n{p.stderr[-2000:]}")
                table.append((config, variant, "failed", p.stderr.strip().splitlines()[-1][:120] if p.stderr else ""))
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["wall_s"] = time.time() - t0
            table.append((config, variant, r))
            print(config, variant, json.dumps(r), flush=True)
            rows.append({"benchmark": "step_profile", "dataset": CONFIGS[config]["dataset"],
                         "method": f"{config} {variant}", "networks": config,
                         "iterations": r["steps"], "wall_s": f"{r['wall_s']:.0f}",
                         "notes": f"steps/min {r['steps_per_min']:.1f} (engine step with its loader worker, median of "
                                  f"{a.steps}); loss of the last steps {r['loss_last']:.4f} (seed 0); phases in-process "
                                  f"(median): load+aug {r['load_s']:.3f} s, forward {r['forward_s']:.3f} s, backward "
                                  f"{r['backward_s']:.3f} s, optimizer {r['optimizer_s']:.3f} s"
                                  + (f"; validation {r['validation_s_per_case']:.2f} s/case x {r['val_cases']} cases"
                                     if "validation_s_per_case" in r else "")
                                  + (f"; warm-up steps {', '.join(f'{x:.1f}' for x in r['warmup_s'])} s"
                                     if "compile" in variant else "")
                                  + f"; amp {amp}, {cores} core(s) {env or ''}; CPU flags: {flags}"})
    if rows and not a.no_csv:
        append_rows(rows)
    print("\nconfig | variant | steps/min | loss | load | fwd | bwd | opt")
    for t in table:
        if isinstance(t[2], dict):
            r = t[2]
            print(f"{t[0]} | {t[1]} | {r['steps_per_min']:.1f} | {r['loss_last']:.4f} | {r['load_s']:.3f} | "
                  f"{r['forward_s']:.3f} | {r['backward_s']:.3f} | {r['optimizer_s']:.3f}")
        else:
            print(" | ".join(map(str, t)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=20, help="engine steps timed per variant (after 3 warm-up steps)")
    ap.add_argument("--phase-steps", type=int, default=8, help="steps whose phases are timed (the first 2 warm up)")
    ap.add_argument("--val-cases", type=int, default=3, help="validation cases timed")
    ap.add_argument("--no-csv", action="store_true", help="print only")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a)))
    else:
        parent(a)


if __name__ == "__main__":
    main()
