"""``config.json`` checked field by field, so a damaged or foreign file is named, not obeyed.

Every field :func:`mnistkit.train` writes has a rule here; fields this version does not know
(a later version's) pass unchecked. Loading a model needs ``model`` and ``model_kwargs``;
resuming needs every field that decides the training (:data:`RESUME_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistkit.errors import MnistkitError

Rule = tuple[str, Callable[[Any], bool]]  # (what the value must be, its test)

SEEDS = (-(2**63), 2**64 - 1)  # what torch.manual_seed takes
# The longest recipe runs 20 epochs; 10,000 epochs of `fast` (4.6 s each on the Xeon, README)
# would take 13 hours. A larger figure is a typo, not a plan.
MAX_EPOCHS = 10_000


def _int(lo: int | None = None, hi: int | None = None) -> Rule:
    if lo is not None and hi is not None:
        return f"an integer from {lo} to {hi}", lambda v: type(v) is int and lo <= v <= hi
    return (
        "an integer" if lo is None else f"an integer >= {lo}",
        lambda v: type(v) is int and (lo is None or v >= lo),
    )


def _number(lo: float, hi: float = math.inf, lo_open: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if type(v) not in (int, float) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and v < hi

    return f"a number in {'(' if lo_open else '['}{lo}, {hi})", ok


def _one_of(*choices: str) -> Rule:
    return f"one of {', '.join(choices)}", lambda v: v in choices


def _dict_of_str() -> Rule:
    return (
        "an object of strings",
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    )


STR: Rule = ("a string", lambda v: isinstance(v, str))
DICT: Rule = ("an object", lambda v: isinstance(v, dict))

FIELDS: dict[str, Rule] = {
    "recipe": STR,
    "recipe_settings": DICT,
    "model": STR,
    "model_kwargs": DICT,
    "optimizer": STR,
    "optimizer_kwargs": DICT,
    "epochs": _int(1, MAX_EPOCHS),
    "batch_size": _int(1),
    "lr": _number(0.0, lo_open=True),
    "schedule": STR,
    "l1": _number(0.0),
    "seed": _int(*SEEDS),
    "val_split": _number(0.0, 1.0),
    "device": _one_of("cpu", "cuda"),
    "threads": _int(1),
    "dataset": STR,
    "data_source": STR,
    "data_sha256": _dict_of_str(),
    "n_train": _int(1),
    "n_val": _int(0),
    "n_test": _int(0),
    "versions": _dict_of_str(),
    # Written at the end of training; a run without it (older, or unfinished) has T = 1.
    "temperature": _number(0.0, lo_open=True),
    "calibration": DICT,
}
LOAD_FIELDS = ("model", "model_kwargs")
# What decides a run's numbers: resume needs them, and they must agree with the checkpoint's.
RESUME_FIELDS = (
    "recipe", "recipe_settings", "model", "model_kwargs", "optimizer", "optimizer_kwargs",
    "epochs", "batch_size", "lr", "seed", "val_split", "dataset", "n_train", "n_val",
)  # fmt: skip
# Recipe fields that earlier versions wrote into recipe_settings and this one no longer has.
# Loading such a run needs only its model, so it is still evaluated, exported and predicted
# with; resuming it is refused with a sentence that says why.
RETIRED_RECIPE_FIELDS = ("epoch_fraction", "eval_batch_size", "loss", "preprocessing")

# Annotations of Recipe fields (strings: recipes.py uses postponed evaluation) -> rule.
_RECIPE_TYPES: dict[str, Rule] = {
    "str": STR,
    "int": _int(),
    "float": _number(-math.inf),
    "bool": ("true or false", lambda v: type(v) is bool),
    "float | None": ("a number or null", lambda v: v is None or _number(-math.inf)[1](v)),
}


def check_config(config: Any, path: str | Path, resume: bool = False) -> dict[str, Any]:
    """Validate a run's config.

    Args:
        config: the parsed JSON.
        path: the file, for messages.
        resume: also require :data:`RESUME_FIELDS` and check ``recipe_settings``.

    Returns:
        ``config`` itself.

    Raises:
        MnistkitError: one sentence naming the file and the first bad field.
    """
    where = str(path)
    if not isinstance(config, dict):
        raise MnistkitError(f"{where!r} does not hold a JSON object; not a mnistkit run.")
    for key in (*LOAD_FIELDS, *(RESUME_FIELDS if resume else ())):
        if key not in config:
            what = "names no model" if key in LOAD_FIELDS else f"has no {key!r} field"
            raise MnistkitError(f"{where!r} {what}; not a mnistkit run, or a damaged one.")
    for key, (want, ok) in FIELDS.items():
        if key in config and not ok(config[key]):
            raise MnistkitError(
                f"{where!r}: field {key!r} must be {want}, not {config[key]!r}; "
                f"the file is damaged or was edited by hand."
            )
    if resume:
        _check_recipe_settings(config["recipe_settings"], where)
    return config


def _check_recipe_settings(settings: dict[str, Any], where: str) -> None:
    from mnistkit.recipes import Recipe

    retired = sorted(set(settings) & set(RETIRED_RECIPE_FIELDS))
    if retired:
        raise MnistkitError(
            f"{where!r} was written by an earlier mnistkit whose recipes had settings since "
            f"removed ({', '.join(retired)}): the run can still be evaluated, exported and "
            f"predicted with, but not resumed; train it again."
        )
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(settings) - set(fields))
    missing = sorted(
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and n not in settings
    )  # fmt: skip
    if unknown or missing:
        raise MnistkitError(
            f"{where!r}: recipe_settings {'has unknown fields ' + str(unknown) if unknown else ''}"
            f"{' and ' if unknown and missing else ''}"
            f"{'lacks ' + str(missing) if missing else ''}; the file is damaged or foreign."
        )
    for name, value in settings.items():
        annotation = str(fields[name].type)
        rule = DICT if annotation.startswith("dict") else _RECIPE_TYPES.get(annotation)
        if rule is not None and not rule[1](value):
            raise MnistkitError(
                f"{where!r}: recipe_settings field {name!r} must be {rule[0]}, not {value!r}; "
                f"the file is damaged or was edited by hand."
            )
