"""The checks of a training checkpoint's contents (:mod:`recurrax.io.checkpoint`): its metadata
field by field, the list of its arrays, their checksums and values.

Each check raises a ``ValueError`` naming the field or array that is wrong, so that a file whose
checksums hold but whose contents do not make a checkpoint is refused with a message, never
half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "MAX_STEP",
    "DTYPES",
    "digest",
    "seal",
    "config_diff",
    "check_meta",
    "check_entries",
    "check_finite",
]

FORMAT = "recurrax-checkpoint"
VERSION = 1
MAX_STEP = 2**31 - 1  # steps are counted in int32 by the training step
DTYPES = (
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
    "uint64", "uint32", "uint16", "uint8", "bool",
)  # fmt: skip


def digest(x: np.ndarray) -> str:
    """The SHA-256 of an array's bytes (C order), in hex."""
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def seal(meta: dict) -> dict:
    """``meta`` with ``sha256_meta``: the SHA-256 of the rest, as canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "sha256_meta"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return {**body, "sha256_meta": hashlib.sha256(canonical).hexdigest()}


def config_diff(saved: dict, current: dict) -> list[str]:
    """One line per setting that differs between a checkpoint's configuration and this run's."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: checkpoint has {saved.get(k)!r}, this run has {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_meta(meta, source: str, *, saving: bool = False) -> None:
    """``ValueError`` naming the first field of a checkpoint's metadata that is missing or
    wrong."""

    def bad(field: str, what: str):
        if saving:
            return ValueError(f"{field.removeprefix('field ')} {what}.")
        return ValueError(
            f"{source} is not a valid checkpoint: {field} {what}. Its checksums hold, so it "
            "was written this way; use a checkpoint written by recurrax.save_checkpoint."
        )

    if not isinstance(meta, dict):
        raise bad("its metadata", f"is a {type(meta).__name__}, not a JSON object")
    for field, kind in (("step", "an int"), ("data_state", "a dict"), ("config", "a dict")):
        if field not in meta:
            raise bad(f"field {field!r}", f"is missing (it must be {kind})")
    step = meta["step"]
    if not _is_int(step):
        raise bad("field 'step'", f"must be an int; it is {step!r}")
    if not 0 <= step <= MAX_STEP:
        raise bad("field 'step'", f"must be from 0 to {MAX_STEP}; it is {step}")
    data_state = meta["data_state"]
    if not isinstance(data_state, dict):
        raise bad("field 'data_state'", f"must be a dict; it is {data_state!r}")
    for k, v in data_state.items():
        if not _is_int(v):
            raise bad(f"field 'data_state.{k}'", f"must be an int; it is {v!r}")
    if not isinstance(meta["config"], dict):
        raise bad("field 'config'", f"must be a dict; it is {meta['config']!r}")
    history = meta.get("history", {})
    if not isinstance(history, dict):
        raise bad("field 'history'", f"must be a dict; it is {history!r}")
    for k, values in history.items():
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise bad(f"field 'history.{k}'", "must be a list of numbers")


def check_entries(meta: dict, source: str) -> list[dict]:
    """The ``arrays`` field of an orbax checkpoint's metadata, checked entry by entry."""

    def bad(field: str, what: str):
        return ValueError(
            f"{source} is not a valid checkpoint: field {field!r} {what}. Use a checkpoint "
            "written by recurrax.save_checkpoint."
        )

    entries = meta.get("arrays")
    if not isinstance(entries, list):
        raise bad("arrays", "is missing or not a list (it must list the arrays saved)")
    names = set()
    for i, e in enumerate(entries):
        where = f"arrays[{i}]"
        if not isinstance(e, dict):
            raise bad(where, f"must be a dict; it is {e!r}")
        name = e.get("name")
        if not isinstance(name, str) or name in names:
            raise bad(f"{where}.name", f"must be a string naming one array; it is {name!r}")
        names.add(name)
        if e.get("dtype") not in DTYPES:
            raise bad(f"{where}.dtype", f"must be one of {DTYPES}; it is {e.get('dtype')!r}")
        shape = e.get("shape")
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise bad(f"{where}.shape", f"must be a list of sizes >= 0; it is {shape!r}")
        digest = e.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise bad(f"{where}.sha256", f"must be a SHA-256 in hex; it is {digest!r}")
        if "key_impl" in e and not isinstance(e["key_impl"], str):
            raise bad(f"{where}.key_impl", f"must be a string; it is {e['key_impl']!r}")
    return entries


def check_finite(arrays: dict, source: str) -> None:
    """``ValueError`` naming the first floating array (the PRNG key aside) holding NaN or
    infinity."""
    for name, x in arrays.items():
        if name == "key":
            continue
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
            raise ValueError(
                f"{source} is not a valid checkpoint: array {name!r} holds NaN or infinite "
                "values; resume from a checkpoint saved before the run diverged."
            )
