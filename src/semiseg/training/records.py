"""Run folders made before semiseg recorded their networks (``networks.json``): the record written
from the run's own ``config.json`` and ``plans.json`` through the method that trained it, so that
``predict``, ``pseudolabel``, ``propagate`` and ``selftrain`` keep accepting them."""
from __future__ import annotations

from pathlib import Path

from ..inference.runs import RECORD, parse_run_spec, write_record
from ..methods import create_method
from ..planning import load_plans
from ..utils import read_json
from .config import TrainConfig, input_channels


def record_earlier_run(run) -> bool:
    """Write ``RUN/networks.json`` for a run folder (``RUN`` or ``RUN@CHECKPOINT``) that has a
    ``config.json`` but no record; True when it wrote one. Anything else is left to the loader,
    which says what is wrong."""
    run = Path(parse_run_spec(run)[0])
    if (run / RECORD).exists() or not (run / "config.json").is_file():
        return False
    cfg = TrainConfig.from_dict(read_json(run / "config.json", "run configuration"))
    plans = load_plans(run)
    method = create_method(cfg.method, cfg)
    net_cfg = cfg.resolved_configuration(plans)
    write_record(run, net_cfg, input_channels(plans, net_cfg), plans.num_classes, method.networks(),
                 method.predict_with())
    return True


def record_earlier_runs(runs) -> list[str]:
    """:func:`record_earlier_run` for each; the runs it recorded."""
    return [str(r) for r in runs if r and record_earlier_run(r)]
