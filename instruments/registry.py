"""The instrument registry: every definition in instruments/definitions plus user-supplied folders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cohortflow.config.loading import ConfigError, load_model

from .model import Instrument

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"


def definition_dirs() -> list[Path]:
    """Shipped definitions, then folders in COHORTFLOW_INSTRUMENT_DIRS (os.pathsep-separated)."""
    extra = [Path(p) for p in os.environ.get("COHORTFLOW_INSTRUMENT_DIRS", "").split(os.pathsep) if p]
    return [DEFINITIONS_DIR, *extra]


def load_instruments(dirs: Iterable[Path] | None = None) -> dict[str, Instrument]:
    """Load every `*.yaml` definition; a later folder may not redefine an earlier code silently."""
    found: dict[str, Instrument] = {}
    origin: dict[str, Path] = {}
    for d in dirs if dirs is not None else definition_dirs():
        for path in sorted(Path(d).glob("*.yaml")):
            inst = load_model(Instrument, path)
            if inst.code in found:
                raise ConfigError(f"{path}: instrument code {inst.code!r} is already defined in {origin[inst.code]}")
            found[inst.code] = inst
            origin[inst.code] = path
    return found


def get_instrument(code: str, instruments: dict[str, Instrument] | None = None) -> Instrument:
    insts = instruments if instruments is not None else load_instruments()
    try:
        return insts[code]
    except KeyError:
        raise KeyError(f"unknown instrument {code!r}; known: {sorted(insts)}") from None
