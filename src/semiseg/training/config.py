"""The training configuration: one dataclass tree, saved as ``RUN/config.json`` with every run.

CLI flags override fields (``semiseg train --lr 0.005 --elastic 0.2``); a run is fully
described by its ``config.json`` plus the ``plans.json`` copied beside it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from ..planning import Plans
from ..planning.topology import repatch
from ..pseudolabels.selection import parse_select
from ..utils import SemisegError
from ..utils.device import AMP_CHOICES
from .augmentation import AugmentConfig

OPTIMIZERS = ("sgd", "adamw")  # sgd: Nesterov, poly decay (nnU-Net); adamw: cosine


@dataclass
class TrainConfig:
    configuration: str = "3d"          # plans.json configuration: 3d | 2d
    method: str = "supervised"         # registered method
    method_options: dict = field(default_factory=dict)   # the method's own options, e.g. cps: {"lambda_max": 0.5}
    network: str = "dynunet"           # registered network
    network_options: dict = field(default_factory=dict)  # e.g. {"base_features": 16, "depth": 4}
    patch_size: list | None = None     # override the plan's patch (z, y, x) or (y, x)
    slice_position: bool = False       # 2D: add the slice positional encoding PE(k) = k / T (Pham et al. 2022, eq. 1)
    batch_size: int | None = None      # global labeled batch (default: the plan's)
    unlabeled_batch: int | None = None  # unlabeled patches per global batch (default: the method's choice)
    labeled: list | None = None        # a subset of the plan's labeled cases (others become unlabeled)
    init: str | None = None            # RUN[@CHECKPOINT]: start every network from that run's weights (warm start)
    pseudo_labels: str | None = None   # a `semiseg pseudolabel` output folder: selected scans train as labeled
    select: str = "all"                # which pseudo-labels: threshold:T | top:FRACTION | all (semiseg.selection)
    select_score: str = "consensus"    # the scores.csv column the selection ranks by
    pseudo_classes: list | None = None  # classes trusted in the pseudo-labels; others merged with background there
    pseudo_share: float | None = None  # share of labeled patches from pseudo-labeled scans (default: as their count)
    class_gate: float = 0.5            # a class enters pseudo-label losses once its maker's labeled Dice reaches it
    class_weights: bool = False        # DHC's distribution-aware class weights on pseudo-label losses
    minutes: float | None = None       # wall-clock budget (everything: loading, training, validation)
    iterations: int | None = None      # iteration budget (the schedule runs over it)
    schedule_span: list | None = None  # [A, B]: the budget runs this part of one longer learning-rate schedule
    #   (a stage continuing its predecessor's schedule, as fit's offline teacher -> student); default [0, 1]
    give_up: list | None = None        # [P, D]: end the run at a validation past P of its budget while its best
    #   validation Dice is below D (fit's probation of a student that must overtake its teacher)
    optimizer: str = "sgd"             # sgd (Nesterov, poly decay, nnU-Net) | adamw (cosine)
    lr: float | None = None            # default 1e-2 (sgd) / 1e-3 (adamw)
    weight_decay: float | None = None  # default 3e-5 (sgd) / 1e-2 (adamw)
    momentum: float = 0.99
    grad_clip: float = 12.0
    loss: str = "dice_ce"              # dice_ce | dice | ce
    fg_oversample: float = 0.33
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    val_every: int | None = None       # iterations between validations (default: 10 per budget; 0: none)
    val_minutes: float | None = None   # a time budget's minutes of training between validations (default a
    #   tenth of it; longer when validating is slow, at most a tenth of the time: training.budget.validation_gap)
    val_step: float = 0.5              # sliding-window step during validation
    checkpoint_minutes: float = 5.0    # also write latest.pt at least this often
    log_every: int = 10
    seed: int = 0
    workers: int | None = None         # data-loading processes (default: 1 on <= 4 cores, else cores - 2)
    amp: str = "auto"                  # auto (fp16 on CUDA; on a CPU measured per run: training.precision) | off | bf16
    device: str | None = None          # default cuda when available

    def __post_init__(self):
        if isinstance(self.aug, dict):
            self.aug = AugmentConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in self.aug.items()})
        if self.optimizer not in OPTIMIZERS:
            raise SemisegError(f"optimizer must be sgd or adamw, not {self.optimizer!r}")
        if self.loss not in ("dice_ce", "dice", "ce"):
            raise SemisegError(f"loss must be dice_ce, dice or ce, not {self.loss!r}")
        if self.minutes is None and self.iterations is None:
            raise SemisegError("give a budget: --minutes M or --iterations N")
        for name in ("minutes", "iterations"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise SemisegError(f"--{name} must be positive, not {v}")
        if self.schedule_span is not None:
            span = self.schedule_span
            if len(span) != 2 or not 0 <= float(span[0]) < float(span[1]) <= 1:
                raise SemisegError(f"schedule_span must be [A, B] with 0 <= A < B <= 1, not {list(span)}")
        if self.give_up is not None and (len(self.give_up) != 2 or not 0 < float(self.give_up[0]) < 1):
            raise SemisegError(f"give_up must be [P, D] with 0 < P < 1 (share of the budget), not {self.give_up}")
        if self.pseudo_labels is not None:
            parse_select(self.select)
        if self.pseudo_classes is not None and not all(isinstance(c, int) and c >= 1 for c in self.pseudo_classes):
            raise SemisegError(f"pseudo_classes must be foreground class indices (>= 1), not {self.pseudo_classes}")
        if self.pseudo_share is not None and not 0 <= self.pseudo_share <= 1:
            raise SemisegError(f"pseudo_share must be in [0, 1], not {self.pseudo_share}")
        if not 0 <= self.class_gate < 1:
            raise SemisegError(f"--class-gate must be a Dice in [0, 1), not {self.class_gate}")
        if self.amp not in AMP_CHOICES:
            raise SemisegError(f"amp must be one of {', '.join(AMP_CHOICES)}, not {self.amp!r}")
        if self.val_minutes is not None and not self.val_minutes > 0:
            raise SemisegError(f"--val-minutes must be positive, not {self.val_minutes}")
        if not 0 < self.val_step <= 1:
            raise SemisegError(f"--val-step must be in (0, 1], not {self.val_step}")

    @property
    def lr0(self) -> float:
        return self.lr if self.lr is not None else (1e-2 if self.optimizer == "sgd" else 1e-3)

    @property
    def wd(self) -> float:
        return self.weight_decay if self.weight_decay is not None else (3e-5 if self.optimizer == "sgd" else 1e-2)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise SemisegError(f"unknown configuration fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def resolved_configuration(self, plans: dict) -> dict:
        """The plan's configuration with this run's overrides (patch, batch)."""
        cfg = dict(Plans(plans).configuration(self.configuration))
        if self.slice_position:
            if len(cfg["patch_size"]) != 2:
                raise SemisegError("--slice-position is for 2D configurations (--config 2d)")
            cfg["slice_position"] = True
        if self.patch_size:
            if len(self.patch_size) != len(cfg["patch_size"]):
                raise SemisegError(f"--patch-size needs {len(cfg['patch_size'])} values for {self.configuration}")
            cfg = repatch(cfg, list(self.patch_size), plans["target_spacing"])
        if self.batch_size:
            cfg["batch_size"] = int(self.batch_size)
        return cfg


def input_channels(plans: dict, cfg: dict) -> int:
    """The networks' input channels: the plan's (after CT windowing) and, with the slice positional
    encoding, its constant plane PE(k) = k / T as one more (the last)."""
    return int(plans["num_input_channels"]) + int(bool(cfg.get("slice_position")))
