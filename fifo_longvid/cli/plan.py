"""``fifo-gen plan``: the generate options plus a card; prints (or writes as JSON) what the run will cost."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .support import build_flags, err, fail


def plan_command(
    gpu_memory: Annotated[float | None, typer.Option("--gpu-memory", metavar="GIB", help="The card's memory in GiB "
                                                     "(any card; its FLOP/s are --gpu's, default H100's).")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", metavar="NAME", help="A card from the table: 3060 (12 GB), "
                                            "4090, a100-40, a100-80, h100, h200 (default h100).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object.")] = False,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the run config.")] = None,
    **opts: Any,
) -> None:
    """Will this run fit my card? Model and sizes, FIFO iterations, U-Net calls and TFLOP per output frame,
    predicted peak GPU memory, the --max-batch auto would pick, whether it fits, and a time floor.

    Needs no weights and no GPU: the costs were measured at full size on fake CUDA tensors (README "Planning").
    """
    from ..errors import ConfigError
    from ..plan import card_for, format_plan, make_plan
    from ..run.config import build_run_config

    flags = build_flags({"prompt": ["(plan)"], **opts})
    try:
        cfg = build_run_config(opts.get("run_config"), flags, overrides or [])
        plan = make_plan(cfg, card_for(gpu, gpu_memory))
    except ConfigError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(plan.to_json(), indent=1))
    else:
        err.print(format_plan(plan), highlight=False, markup=False)
