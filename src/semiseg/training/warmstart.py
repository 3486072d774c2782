"""Warm start (``--init RUN[@CHECKPOINT]``): every network of a new run starts from a finished run's
weights; the schedule, optimizers and budget start fresh.

Each network takes the weights of the init run's network of the same name, or else of the network
the init run predicts with (a supervised run's ``net`` starts both networks of a CPS pair, or a
mean teacher's student and teacher). The two runs must be planned alike (target spacing,
normalisation, resampling) and the networks must be the same registered network with the same
options; otherwise the error names what differs.
"""
from __future__ import annotations

from pathlib import Path

from ..inference.runs import checkpoint_path, parse_run_spec, read_record
from ..planning import load_plans
from ..preprocessing.cache import plan_hash
from ..utils import SemisegError
from ..utils.checkpoint import load_checkpoint
from .records import record_earlier_run


def warm_start(nets: dict, specs: dict, init: str, plans: dict) -> dict[str, str]:
    """Load ``init``'s weights into ``nets`` (name -> module; ``specs`` name -> NetworkSpec). Returns
    which init network each network took."""
    run, ck = parse_run_spec(init, "best")
    run = Path(run)
    record_earlier_run(run)
    rec = read_record(run)
    if plan_hash(load_plans(run)) != plan_hash(plans):
        raise SemisegError(f"--init {init}: that run was planned differently (target spacing, normalisation or "
                           "resampling); warm-start from a run on the same work folder")
    state = load_checkpoint(checkpoint_path(run, ck))["nets"]
    taken = {}
    for name, net in nets.items():
        src = name if name in state and name in rec["networks"] else rec["predict_with"][0]
        have, want = rec["networks"][src], specs[name]
        if have["network"] != want.network or dict(have["options"]) != dict(want.options):
            raise SemisegError(f"--init {init}: its network {src!r} is {have['network']} {have['options']}, this "
                               f"run's {name!r} is {want.network} {dict(want.options)}; they must match")
        try:
            net.load_state_dict(state[src])
        except RuntimeError as e:
            raise SemisegError(f"--init {init}: the weights of {src!r} do not fit {name!r} (another patch size "
                               f"or depth?): {str(e).splitlines()[0]}") from None
        taken[name] = src
    return taken
