"""``semiseg fit``: the best recipe measured on this project's benchmarks, in one wall-clock budget.

One command from a dataset to a model: plan, preprocess, every training stage, pseudo-labelling,
all inside ``minutes`` (planning and preprocessing count; they cost nothing when ``DATASET`` is a
work folder already preprocessed). The stages and their share of the budget are printed first.

Recipes (``--recipe``; ``docs/benchmarks.md`` has the measurements that chose the default):

- ``offline-continued`` (default): a supervised teacher for 60% of the training budget; the teacher
  pseudo-labels the unlabeled scans in 10% of the budget (every scan with its mirrorings as
  ensemble members when that fits, else its best and final checkpoints, or the best alone when it
  is the final one, on as many scans as fit, timed on the first scans); a student warm-started
  from the teacher trains on the labels plus every pseudo-label for the rest (half of its patches
  from labeled scans, as the labeled half of semi-supervised batches), the classes the teacher did
  not learn (validation Dice at its best checkpoint under ``class_gate``, 0.5) merged with
  background on the pseudo-labeled patches (partial labels), so that they are not taught as
  background (Pham et al. 2022's self-training, the FLARE22 winners' teacher -> pseudo-labels ->
  student; Chen et al. 2023). Teacher and student share one learning-rate schedule: the student
  starts at the rate where the teacher's part ended instead of restarting at 1e-2 (which cost the
  ``offline`` student its first minutes). The student is on probation: if it has not overtaken the
  teacher's best validation Dice by ``PROBATION`` of its budget, it stops and the teacher continues
  for the rest. docs/benchmarks.md compares the recipes with supervised training.
- ``offline``: the same with a fresh schedule for the student and a teacher of 40%.
- ``bcp``: supervised pre-training with copy-paste between labeled patches (half), then a mean
  teacher with bidirectional copy-paste warm-started from it (Bai et al. 2023).
- ``mean-teacher``: supervised pre-training (half), then a plain mean teacher.
- ``cps``: supervised pre-training (half), then cross pseudo supervision of two networks both
  warm-started from it.
- ``supervised``: the labels alone, the whole budget (the baseline).

Configuration (``configuration="auto"``, the default): the plan's 2D configuration for thick-slice
scans (target spacing's coarsest axis > 3x its finest), else 3D; in 2D the patch sides are capped at
160 pixels and the batch at 8 unless given (:mod:`semiseg.planning.choices`, shared with ``train --config
auto``), so a CPU budget gives enough steps.

Every training stage validates like any time-budgeted run (:func:`semiseg.training.budget.validation_gap`):
every tenth of its minutes, less often when validating is slow, so that it takes at most a tenth of the
stage's time.

The final model is the last stage's, unless an earlier training stage scored a strictly higher best
validation Dice (then that one's, logged): the student only where it pays.

Folder ``OUT``: ``fit.json`` (settings and every stage's status, minutes and result), ``log.txt``,
``work/`` (the plan and preprocessed cases, unless DATASET was a work folder), ``stages/`` (one
run folder per training stage, the pseudo-labels), and at the top the final model as a run
folder (``config.json``, ``plans.json``, ``networks.json``, ``checkpoints/best.pt``...) that
``semiseg predict``, ``pseudolabel`` and ``propagate --reference`` accept, with ``summary.json``.

Resumable after ``kill -9`` at any point: the same command again keeps every finished stage, a
training stage resumes from its ``latest.pt`` (checkpointed every minute), pseudo-labelling skips
scans already written. A stage's minutes are fixed when it first starts.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data.checking import load_dataset
from ..data.dataset import link_case_images
from ..inference import postprocessing
from ..methods import create_method
from ..planning import first_labeled, load_plans, plan, split_cases
from ..planning.choices import SLICE_BATCH_MAX, SLICE_PATCH_MAX, choose_configuration, slice_overrides
from ..preprocessing.cache import preprocess
from ..pseudolabels.pseudolabel import pseudolabel_folder
from ..training import TrainConfig, train
from ..training.config import CLASS_GATE
from ..training.state import FINISHED, FRESH, RESUMED, run_state
from ..utils import SemisegError, atomic_path, read_json, write_json


def learned_classes(run: Path, gate: float) -> list[int]:
    """Foreground classes whose validation Dice at the run's best checkpoint reaches ``gate``, read by
    class name: from ``postprocessing.json`` (the best checkpoint's Dice per class), else from the
    validation row of ``metrics.csv`` at the best iteration (its last validation when none matches)."""
    best = read_json(run / "summary.json", "run summary")["best_iteration"]
    names = load_plans(run).class_names()
    pp = read_json(run / postprocessing.FILE, "postprocessing choice") if (run / postprocessing.FILE).exists() else {}
    if pp.get("iteration") == best:
        dice = pp["val_dice"]
    else:
        rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("val_dice")]
        row = next((r for r in rows if int(r["iteration"]) == best), rows[-1] if rows else {})
        dice = {n: float(row.get(f"val_dice_{n}") or 0) for n in names}
    return [c for c, n in enumerate(names, 1) if dice.get(n, 0) >= gate]


def ended_best(run: Path) -> bool:
    """The run's best checkpoint is its final one (then the two are one ensemble member, not two)."""
    summ = read_json(run / "summary.json", "run summary")
    return summ["best_iteration"] == summ["iterations"]


RUN_FILES = ("config.json", "plans.json", "networks.json", "split.json", "metrics.csv", "progress.png",
             "postprocessing.json", "precision.json")
CHECKPOINT_MINUTES = 1.0
MIN_STAGE_MINUTES = 0.05
PSEUDOLABEL_SHARE = 0.1  # pseudo-labelling's share of the budget: mirrorings as members only when every scan fits
#   it; without them, as many scans as fit it (timed on the first scans), the rest stay unlabeled
PROBE_SCANS = 2


@dataclass
class Stage:
    """One stage of a recipe: ``train`` (a ``semiseg train`` run with these TrainConfig fields,
    warm-started from the previous training stage) or ``pseudolabel``; ``share`` of the training
    budget (None: what is left)."""
    name: str
    kind: str = "train"
    share: float | None = None
    config: dict = field(default_factory=dict)
    pseudo: bool = False  # train on the labels plus the pseudo-labels of the last pseudolabel stage
    continues: bool = False  # continue the previous training stage's learning-rate schedule (schedule_span)
    #   instead of starting a fresh one at the full rate
    probation: float | None = None  # past this share of its budget the stage must have overtaken the previous
    #   training stage's best validation Dice, else it stops and its time goes back to that stage (continued)
    init_from: str = "best"  # the previous training stage's checkpoint it starts from


PROBATION = 0.35  # the student's share of its budget by which it must beat the teacher (see Stage.probation)
STUDENT = {"select": "all", "select_score": "entropy", "pseudo_share": 0.5}  # every pseudo-label (entropy:
#   the score a single member has), half of the patches from labeled scans
RECIPES: dict[str, list[Stage]] = {
    "offline": [Stage("teacher", share=0.4), Stage("pseudolabel", "pseudolabel"),
                Stage("student", config=STUDENT, pseudo=True)],
    "offline-continued": [Stage("teacher", share=0.6), Stage("pseudolabel", "pseudolabel"),
                          Stage("student", config=STUDENT, pseudo=True, continues=True, probation=PROBATION)],
    "bcp": [Stage("pretrain", share=0.5, config={"method_options": {"mix": "copy-paste"}}),
            Stage("mean-teacher", config={"method": "mean-teacher", "method_options": {"mix": "copy-paste"}})],
    "mean-teacher": [Stage("pretrain", share=0.5),
                     Stage("mean-teacher", config={"method": "mean-teacher", "method_options": {"mix": "none"}})],
    "cps": [Stage("pretrain", share=0.5), Stage("cps", config={"method": "cps"})],
    "supervised": [Stage("supervised")],
}
DEFAULT_RECIPE = "offline-continued"


def is_work_folder(path: Path) -> bool:
    return (path / "plans.json").exists() and (path / "preprocessed" / "summary.json").exists()


def recipe_stages(recipe: str, teacher_share: float | None = None) -> list[Stage]:
    """The recipe's stages, its first training stage given ``teacher_share`` of the training budget
    when set (``--teacher-share``; refused for a recipe whose first stage takes the whole budget)."""
    stages = list(RECIPES[recipe])
    if teacher_share:
        i = next(i for i, st in enumerate(stages) if st.kind == "train")
        if stages[i].share is None:
            raise SemisegError(f"--teacher-share: recipe {recipe} has a single training stage, the whole budget")
        stages[i] = dataclasses.replace(stages[i], share=teacher_share)
    return stages


def describe(recipe: str, minutes: float, teacher_share: float | None = None) -> list[str]:
    """One line per stage with its share of the budget (what ``fit`` prints first)."""
    lines = ["plan + preprocess: measured, counted in the budget (none for a preprocessed work folder)"]
    for st in recipe_stages(recipe, teacher_share):
        if st.kind == "pseudolabel":
            lines.append(f"{st.name}: the unlabeled scans with the teacher in {PSEUDOLABEL_SHARE:.0%} of the budget "
                         "(its mirrorings as members when every scan fits, else its best and final checkpoints, "
                         "one member when they are the same, on as many scans as fit); measured, counted")
        else:
            share = f"{st.share:.0%} of the training budget" if st.share else "the rest of the budget"
            extra = " on labels + pseudo-labels" if st.pseudo else ""
            extra += ", continuing its learning-rate schedule" if st.continues else ""
            if st.probation:
                extra += (f"; past {st.probation:.0%} of its budget it must have overtaken the previous stage's best "
                          "validation Dice, else it stops and that stage continues for the rest")
            lines.append(f"{st.name}: {st.config.get('method', 'supervised')}{extra}, {share}")
    return lines


class Fit:
    def __init__(self, out: Path, settings: dict, progress: bool, log):
        self.out, self.s, self.progress, self._log = out, settings, progress, log
        self.t_invocation = time.time()

    def log(self, msg: str) -> None:
        line = f"fit: {msg}"
        with open(self.out / "log.txt", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self._log(line)

    def save(self) -> None:
        write_json(self.s, self.out / "fit.json")

    def spent_s(self) -> float:
        """Seconds of the budget used by finished stages."""
        return sum(st.get("seconds", 0.0) for st in self.s["stages"].values() if st.get("done"))

    def stage(self, name: str, fn) -> dict:
        st = self.s["stages"].setdefault(name, {})
        if st.get("done"):
            self.log(f"{name}: finished earlier, kept ({st['seconds'] / 60:.1f} min)")
            return st
        t0 = time.time()
        st.update(fn(st) or {})
        # this attempt's wall time; a resumed training stage: at least its own clock (restored on resume)
        st["seconds"] = max(st.get("train_seconds", 0.0), time.time() - t0)
        st["done"] = True
        self.save()
        of = f" of {self.s['minutes']:g}" if self.s.get("minutes") else ""
        self.log(f"{name}: done in {st['seconds'] / 60:.1f} min ({self.spent_s() / 60:.1f}{of} min used)")
        return st

    def train_stage(self, i: int, stage: Stage, work: Path, prev: Path | None, pseudo: Path | None,
                    training_left: list[Stage], span_start: float, reserve_min: float, beat: float | None = None,
                    name: str | None = None) -> Path:
        """A training stage: its budget and schedule span fixed once (:meth:`fix_budget`), its
        configuration assembled (:meth:`stage_config`), then trained or resumed in OUT/stages/I-NAME."""
        name = name or stage.name
        run = self.out / "stages" / f"{i}-{name}"

        def go(st):
            if "minutes" not in st and "iterations" not in st:  # fixed once, so a resumed stage keeps its budget
                self.fix_budget(st, stage, name, prev, training_left, span_start, reserve_min, beat)
            cfg = self.stage_config(st, stage, name, prev, pseudo)
            state = run_state(run)
            size = f"{st['iterations']} steps" if "iterations" in st else f"{st['minutes']:g} min"
            doing = {FRESH: "training", RESUMED: "resuming", FINISHED: "finished earlier (its run kept):"}[state]
            self.log(f"{name}: {doing} {cfg.get('method', 'supervised')} "
                     f"for {size}" + (f", on probation: it must beat {beat:.4f} by {stage.probation:.0%} of it"
                                      if st.get("give_up") else "") + f" -> {run}")
            summ = read_json(run / "summary.json", "run summary") if state == FINISHED else \
                train(work, run, TrainConfig.from_dict(cfg), resume=state == RESUMED, progress=self.progress)
            return {"run": str(run), "iterations": summ["iterations"], "best_val_dice": summ["best_val_dice"],
                    "best_iteration": summ["best_iteration"], "train_seconds": summ["elapsed_s"],
                    "gave_up": bool(summ.get("gave_up")), "amp": summ.get("amp")}

        self.stage(name, go)
        return run

    def fix_budget(self, st: dict, stage: Stage, name: str, prev: Path | None, training_left: list[Stage],
                   span_start: float, reserve_min: float, beat: float | None) -> None:
        """A training stage's steps or minutes, its part of the schedule and its probation, saved in
        fit.json. ``span_start``: where this stage's part of the schedule starts (0, or where the previous
        stage's ended when this one continues it); ``reserve_min``: minutes the stages between this one
        and the next training stage are given (pseudo-labelling), when that one continues this one's
        schedule; ``beat``: the previous stage's best validation Dice, which a stage on probation must
        overtake."""
        end = 1.0
        steps = self.s.get("iterations")  # a budget in steps (the demo's) instead of minutes
        if steps:
            left = steps - sum(x.get("iterations", 0) for x in self.s["stages"].values() if x.get("done"))
            n = int(round(steps * stage.share)) if stage.share is not None else \
                left // max(1, sum(1 for s in training_left if s.share is None))
            st["iterations"] = max(1, n)
            if len(training_left) > 1 and training_left[1].continues:
                end = span_start + (1 - span_start) * n / max(left, 1)
        else:
            left = self.s["minutes"] - self.spent_s() / 60
            if stage.share is not None:
                minutes = self.s["training_minutes"] * stage.share
            else:
                minutes = left / max(1, sum(1 for s in training_left if s.share is None))
            if minutes < MIN_STAGE_MINUTES:
                if prev is None:  # nothing trained yet: refuse before spending anything
                    raise SemisegError(f"the budget of {self.s['minutes']:g} min leaves {minutes:.2f} min for "
                                       f"stage {name} (planning and preprocessing took the rest); give "
                                       "more --minutes")
                self.log(f"{name}: the earlier stages overran the budget; {MIN_STAGE_MINUTES:g} min for it "
                         "anyway")
                minutes = MIN_STAGE_MINUTES
            st["minutes"] = round(minutes, 3)
            if len(training_left) > 1 and training_left[1].continues:  # one schedule over both stages:
                later = max(left - minutes - reserve_min, MIN_STAGE_MINUTES)  # this one's share of it
                end = span_start + (1 - span_start) * minutes / (minutes + later)
        st["schedule_span"] = [round(span_start, 4), round(end, 4)]
        if stage.probation and beat is not None:
            st["give_up"] = [stage.probation, beat]
        self.save()

    def stage_config(self, st: dict, stage: Stage, name: str, prev: Path | None, pseudo: Path | None) -> dict:
        """The stage's TrainConfig fields: the user's training flags, over them what the recipe's stage
        sets (logged), the method options of the stage's method, its budget and span, the warm start
        from the previous stage and the pseudo-labels with the classes the teacher learned."""
        budget = {"iterations": st["iterations"], "minutes": None} if "iterations" in st else \
            {"minutes": st["minutes"]}
        cfg = dict(self.s["train"], **stage.config, **budget,
                   checkpoint_minutes=self.s["train"].get("checkpoint_minutes", CHECKPOINT_MINUTES))
        cfg["method_options"] = dict(self.s.get("method_options", {}).get(cfg.get("method", "supervised"), {}),
                                     **stage.config.get("method_options", {}))
        overridden = sorted(k for k in stage.config if k in self.s["train"] and k != "method_options")
        if overridden:
            self.log(f"{name}: the recipe sets {', '.join(f'{k}={stage.config[k]}' for k in overridden)} "
                     "for this stage (your flags apply to the others)")
        if st.get("schedule_span", [0, 1]) != [0, 1]:
            cfg["schedule_span"] = st["schedule_span"]
        if st.get("give_up"):
            cfg["give_up"] = st["give_up"]
        if prev is not None:
            cfg["init"] = f"{prev}@{stage.init_from}"
        if pseudo is not None:
            cfg["pseudo_labels"] = str(pseudo)
            if "pseudo_classes" not in st:  # fixed once, as the minutes
                gate = cfg.get("class_gate", CLASS_GATE)
                st["pseudo_classes"] = learned_classes(prev, gate)
                self.save()
                self.log(f"{name}: pseudo-labels trusted for the classes the teacher learned (validation "
                         f"Dice >= {gate:g}): {st['pseudo_classes'] or 'none'}; others "
                         "merged with background on pseudo-labeled patches")
            cfg["pseudo_classes"] = st["pseudo_classes"]
        return cfg

    def prepare(self, dataset: Path, workers: int | None) -> Path:
        """The work folder: DATASET itself when it is one, else planned and preprocessed into OUT/work
        (stages ``plan`` and ``preprocess``, counted in the budget)."""
        if is_work_folder(dataset):
            return dataset
        work = self.out / "work"

        def do_plan(st):
            if work.exists():  # a plan that died half-way
                shutil.rmtree(work)
            p = plan(dataset, work, workers=workers, progress=self.progress, student=self.s["student_plan"])
            return {"target_spacing": p["target_spacing"]}

        self.stage("plan", do_plan)
        self.stage("preprocess", lambda st: {"counts": preprocess(work, workers=workers, progress=self.progress)})
        return work

    def decide(self, work: Path) -> None:
        """What is decided once on the plan and kept in fit.json: the labeled cases of ``--labeled N``,
        the configuration of ``--config auto``, the 2D patch and batch caps, the training minutes."""
        s = self.s
        if s.get("n_labeled"):
            s["train"]["labeled"], s["n_labeled"] = first_labeled(work, s["n_labeled"]), None
            self.save()
        plans = load_plans(work)
        if s["train"]["configuration"] == "auto":
            s["train"]["configuration"], why = choose_configuration(plans)
            s["configuration_why"] = why
            self.save()
            self.log(f"configuration: {why}")
        if s["train"]["configuration"] == "2d" and "slice_overrides" not in s:
            plan_cfg = plans.configuration("2d")
            s["slice_overrides"] = slice_overrides(plan_cfg, s["train"])
            s["train"].update(s["slice_overrides"])
            self.save()
            if s["slice_overrides"]:
                self.log(f"2D: patch {s['train']['patch_size']} batch {s['train']['batch_size']} (the plan's "
                         f"{plan_cfg.patch_size} batch {plan_cfg.batch_size}, sides capped at {SLICE_PATCH_MAX}, "
                         f"batch at {SLICE_BATCH_MAX}: more steps in the budget; --patch-size/--batch-size to "
                         "choose)")
        if "training_minutes" not in s and s["minutes"]:
            s["training_minutes"] = round(s["minutes"] - self.spent_s() / 60, 3)
            self.save()

    def pseudolabel_stage(self, i: int, stage: Stage, work: Path, teacher: Path, unlabeled: list[str]) -> Path:
        """Stage ``pseudolabel``: the teacher's pseudo-labels of the unlabeled scans, in its share of the
        budget (mirrorings as members when every scan fits it, else its best and final checkpoints on as
        many scans as fit, timed on the first scans); every scan with mirrorings in a budget of steps."""
        s, out = self.s, self.out
        pseudo = out / "stages" / f"{i}-pseudolabel"

        def go(st):
            raw = load_dataset(load_plans(work)["dataset_path"])

            def links(ids, name):  # a fresh folder of links to these scans' images
                shutil.rmtree(out / "stages" / name, ignore_errors=True)
                return link_case_images(raw, ids, out / "stages" / name)

            def seconds_per_scan(runs, ids, tta):  # timed on these scans; their labels are kept
                shutil.rmtree(pseudo, ignore_errors=True)  # a timing killed before its decision: time it again
                t0 = time.time()
                pseudolabel_folder(runs, links(ids, "probe_image"), pseudo, tta_members=tta, num_parts=1,
                                   part_id=0, progress=False)
                return (time.time() - t0) / len(ids)

            if "tta_members" not in st and s.get("iterations"):  # a budget in steps: every scan, mirrorings
                st.update(tta_members=True, probe_s=0.0)
            if "tta_members" not in st:  # decided once, on the first scan's cost
                per_scan = seconds_per_scan([f"{teacher}@best"], unlabeled[:1], True)
                st["tta_members"] = per_scan * len(unlabeled) <= PSEUDOLABEL_SHARE * 60 * s["minutes"]
                st["probe_s"] = round(per_scan, 2)
                self.save()
            runs = [f"{teacher}@best"] if st["tta_members"] or ended_best(teacher) else \
                [f"{teacher}@best", f"{teacher}@final"]
            todo = unlabeled
            if not st["tta_members"]:
                if "n_scans" not in st:  # time the members on the first scans (every scan with the same
                    first = unlabeled[:PROBE_SCANS]  # members); label as many as fit the share
                    per_scan = seconds_per_scan(runs, first, False)
                    fit_in = int((PSEUDOLABEL_SHARE * 60 * s["minutes"] - st["probe_s"]) / per_scan)
                    st["n_scans"] = min(len(unlabeled), max(len(first), fit_in))
                    st["scan_s"] = round(per_scan, 2)
                    self.save()
                todo = unlabeled[:st["n_scans"]]
            how = ("mirrorings" if st["tta_members"] else
                   f"{'best and final checkpoints' if len(runs) > 1 else 'its best checkpoint, its final one'}, "
                   f"no mirroring, {st['scan_s']:.1f} s per scan")
            self.log(f"pseudolabel: {len(todo)} of {len(unlabeled)} unlabeled scans with {teacher}, members: {how} "
                     f"(mirrorings take {st['probe_s']:.1f} s per scan; used when every scan fits "
                     f"{PSEUDOLABEL_SHARE:.0%} of the budget, else as many scans as fit it) -> {pseudo}")
            images = links(todo, "unlabeled_images")
            r = pseudolabel_folder(runs, images, pseudo, tta_members=st["tta_members"], num_parts=1, part_id=0,
                                   progress=self.progress)
            return {"scans": len(todo), "unlabeled": len(unlabeled), "written": r["done"], "kept": r["skipped"]}

        self.stage(stage.name, go)
        return pseudo

    def run(self, work: Path) -> dict:
        """Every stage of the recipe in turn (a finished stage is kept), a student that does not pay
        giving its time back, then the final model published; returns OUT/summary.json's content."""
        s, minutes = self.s, self.s["minutes"]
        _lab, unlabeled, _val = split_cases(work, s["train"].get("labeled"))
        stages = recipe_stages(s["recipe"], s.get("teacher_share"))
        stages_by_name = {st.name: st for st in stages}
        if any(st.kind == "pseudolabel" for st in stages) and not unlabeled:
            raise SemisegError(f"{work / 'split.json'}: no unlabeled cases; recipe {s['recipe']} needs some "
                               "(--recipe supervised uses the labels alone)")
        prev = pseudo = prev_name = None
        runs: dict[str, Path] = {}
        for i, stage in enumerate(stages):
            if stage.kind == "pseudolabel":
                pseudo = self.pseudolabel_stage(i, stage, work, prev, unlabeled)
                continue
            rest = [s2 for s2 in stages[i:] if s2.kind == "train"]
            start = s["stages"][prev_name]["schedule_span"][1] if stage.continues and prev_name else 0.0
            reserve = PSEUDOLABEL_SHARE * (minutes or 0) if any(s2.kind == "pseudolabel" for s2 in stages[i + 1:]) \
                else 0.0
            beat = s["stages"][prev_name]["best_val_dice"] if stage.probation and prev_name else None
            before = prev
            prev = runs[stage.name] = self.train_stage(i, stage, work, prev, pseudo if stage.pseudo else None, rest,
                                                       start, reserve, beat)
            if s["stages"][stage.name].get("gave_up"):  # the rest of its time goes back to the stage it did not beat
                back = Stage(f"{prev_name}-continued", config=stages_by_name[prev_name].config, continues=True,
                             init_from="final")
                self.log(f"{stage.name}: did not overtake {prev_name} (best validation Dice "
                         f"{s['stages'][stage.name]['best_val_dice']:.4f} against {beat:.4f}); {prev_name} continues "
                         "its own schedule for the rest of the budget")
                prev = runs[back.name] = self.train_stage(i, back, work, before, None, [back] + rest[1:], start, 0.0,
                                                          name=back.name)
                prev_name = back.name
                continue
            prev_name = stage.name
        chosen = final_stage(s["stages"], list(runs))
        last = list(runs)[-1]
        if chosen != last:
            self.log(f"{last}: best validation Dice {s['stages'][last]['best_val_dice']:.4f}, below "
                     f"{chosen}'s {s['stages'][chosen]['best_val_dice']:.4f}: the final model is {chosen}'s")
        summ = self.publish(runs[chosen])
        used = (f"{sum(st.get('iterations', 0) for k, st in s['stages'].items() if k in runs)} of "
                f"{s['iterations']} steps" if s.get("iterations") else f"{self.spent_s() / 60:.1f} of {minutes:g} min")
        self.log(f"finished: {used}; final model ({chosen}) best validation Dice {summ['best_val_dice']:.4f}; run "
                 f"folder {self.out}")
        return summ

    def publish(self, run: Path) -> dict:
        """The final stage's model becomes OUT's own run folder (copied; checkpoints hard-linked)."""
        for name in RUN_FILES:
            if (run / name).exists():
                shutil.copy2(run / name, self.out / name)
        (self.out / "checkpoints").mkdir(exist_ok=True)
        for ck in ("best.pt", "final.pt"):
            dst = self.out / "checkpoints" / ck
            with atomic_path(dst, suffix=".pt") as tmp:
                try:
                    os.link(run / "checkpoints" / ck, tmp)
                except OSError:
                    shutil.copy2(run / "checkpoints" / ck, tmp)
        summ = dict(read_json(run / "summary.json", "run summary"), fit={
            "recipe": self.s["recipe"], "minutes": self.s["minutes"], "used_minutes": round(self.spent_s() / 60, 2),
            "final_stage": str(run), "stages": self.s["stages"]})
        write_json(summ, self.out / "summary.json")
        return summ


def final_stage(stages: dict, trained: list[str]) -> str:
    """The training stage whose model ``fit`` publishes: the last one, unless an earlier one scored a
    strictly higher best validation Dice (a student or semi-supervised stage that did not pay)."""
    return max(trained, key=lambda n: (stages[n].get("best_val_dice", float("-inf")), n == trained[-1]))


def check_options(recipe: str, train_cfg: dict, method_options: dict) -> None:
    """Refuse, before anything is written, training options that are bad or that no stage of the recipe
    would use: a method's options when no stage trains with that method."""
    TrainConfig.from_dict(dict(train_cfg, configuration="3d"))
    methods = {st.config.get("method", train_cfg.get("method", "supervised")) for st in RECIPES[recipe]
               if st.kind == "train"}
    for method, opts in method_options.items():
        if method not in methods:
            raise SemisegError(f"options of --method {method} ({', '.join(opts)}): no stage of recipe {recipe} "
                               f"trains with {method} (its stages: {', '.join(sorted(methods))})")
        create_method(method, TrainConfig.from_dict(dict(train_cfg, configuration="3d", method=method,
                                                         method_options=opts)))


def fit_settings(dataset: Path, out: Path, minutes: float | None, recipe: str, configuration: str,
                 labeled: list[str] | int | None, seed: int, student_plan: bool, train_options: dict | None,
                 workers: int | None, teacher_share: float | None, iterations: int | None) -> dict:
    """The settings of the fit in ``out``: those saved in ``fit.json`` when it continues (the same
    DATASET, recipe and budget are required), else new ones, checked before anything is written."""
    if (out / "fit.json").exists():  # continue with the saved settings
        s = read_json(out / "fit.json", "fit settings")
        if (s["dataset"], s["recipe"], s["minutes"], s.get("iterations")) != (str(dataset), recipe, minutes,
                                                                              iterations):
            budget = f"{s['minutes']:g} min" if s["minutes"] else f"{s.get('iterations')} steps"
            raise SemisegError(f"{out}: holds a fit of {s['dataset']} (recipe {s['recipe']}, {budget}); "
                               "give the same DATASET, --recipe and --minutes (or --iterations) to continue it, or "
                               "another -o")
        return s
    if recipe not in RECIPES:
        raise SemisegError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if (minutes is None) == (iterations is None):
        raise SemisegError("give a budget: --minutes M or --iterations N (one of them)")
    if minutes is not None and minutes <= 0:
        raise SemisegError(f"--minutes must be positive, not {minutes}")
    if iterations is not None and iterations < 2:
        raise SemisegError(f"--iterations must be at least 2, not {iterations}")
    if teacher_share is not None and not 0 < teacher_share < 1:
        raise SemisegError(f"--teacher-share must be in (0, 1), not {teacher_share}")
    recipe_stages(recipe, teacher_share)  # refuses a share for a one-stage recipe
    if out.exists() and any(out.iterdir()):
        raise SemisegError(f"{out}: exists and is not a fit folder (no fit.json); choose another -o")
    if not is_work_folder(dataset):
        load_dataset(dataset)  # a clear error for a bad dataset before anything is written
    n_labeled = labeled if isinstance(labeled, int) else None
    if n_labeled is not None and n_labeled < 1:
        raise SemisegError(f"--labeled must be at least 1, not {n_labeled}")
    if configuration not in ("auto", "3d", "2d"):
        raise SemisegError(f"--config must be auto, 3d or 2d, not {configuration!r}")
    train_options = dict(train_options or {})
    method_options = train_options.pop("method_options", {})
    train_cfg = dict(configuration=configuration, labeled=None if n_labeled else labeled, seed=seed,
                     workers=workers, **train_options, minutes=1.0)
    check_options(recipe, train_cfg, method_options)  # refuse bad or unused options now
    out.mkdir(parents=True, exist_ok=True)
    s = {"dataset": str(dataset), "recipe": recipe, "minutes": minutes, "iterations": iterations,
         "student_plan": student_plan,
         "n_labeled": n_labeled, "teacher_share": teacher_share,
         "train": {k: v for k, v in train_cfg.items() if k != "minutes"}, "stages": {}}
    if method_options:
        s["method_options"] = method_options
    write_json(s, out / "fit.json")
    return s


def fit(dataset: str | Path, out: str | Path, minutes: float | None, recipe: str = DEFAULT_RECIPE,
        configuration: str = "auto", labeled: list[str] | int | None = None, seed: int = 0, student_plan: bool = False,
        train_options: dict | None = None, workers: int | None = None, progress: bool = True, log=print,
        teacher_share: float | None = None, iterations: int | None = None) -> dict:
    """Run (or continue) ``semiseg fit`` into ``out``; returns OUT/summary.json's content.
    ``labeled``: case IDs, or N for the first N labeled cases of the plan's split (default all).
    ``teacher_share``: the first training stage's share of the training budget (default the recipe's).
    ``iterations`` instead of ``minutes``: a budget in training steps, shared by the training stages as
    minutes would be (planning and pseudo-labelling take what they take; every scan is pseudo-labelled
    with its mirrorings), so that the result does not depend on the host's speed (the demo's)."""
    dataset, out = Path(dataset).resolve(), Path(out).resolve()
    s = fit_settings(dataset, out, minutes, recipe, configuration, labeled, seed, student_plan, train_options,
                     workers, teacher_share, iterations)
    f = Fit(out, s, progress, log)
    f.log(f"recipe {recipe} in {f'{minutes:g} min' if minutes else f'{iterations} training steps'} in total:")
    for line in describe(recipe, minutes, s.get("teacher_share")):
        f.log(f"  {line}")
    work = f.prepare(dataset, workers)
    f.decide(work)
    return f.run(work)
