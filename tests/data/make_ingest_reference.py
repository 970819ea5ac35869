"""Write tests/data/ingest_reference.json: row counts and SHA-256 of every warehouse table (canonical dump)
after `ingest_files` of a small generated study (factor 0.05, seed 7, every synth fault, data_docs="none").

Run it with the code whose warehouse content is the reference (it was made with main at 86a2689, before the
ingest speed-up round): `python tests/data/make_ingest_reference.py [OUT.json]`. Regenerate it (from a commit
whose ingestion is trusted) only when the synth generator or the warehouse content is meant to change.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

KEY = b"ingest-reference-key-0123456789"
FACTOR, SEED = 0.05, 7


def table_digests(engine) -> dict[str, list]:  # noqa: ANN001 - sqlalchemy Engine
    """{table: [row count, SHA-256 of its canonical rows]}."""
    from cohortflow.warehouse.dump import canonical_dump

    return {t: [len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()]
            for t, rows in sorted(canonical_dump(engine).items())}


def ingest_reference_study(work: Path, **kwargs) -> dict[str, list]:
    """Generate the study under `work`, ingest it into a fresh SQLite warehouse, return its table digests."""
    from cohortflow.config.study import load_study
    from cohortflow.ingest.mapping import load_sources
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.synth.faults import FAULTS
    from cohortflow.synth.generate import generate_study
    from cohortflow.warehouse.batch_ingest import ingest_files
    from cohortflow.warehouse.db import get_engine, init_warehouse
    from cohortflow.warehouse.load import inbox_files

    generate_study(work / "study", factor=FACTOR, seed=SEED, faults=sorted(FAULTS))
    engine = init_warehouse(get_engine(f"sqlite:///{work / 'w.sqlite'}"))
    ingest_files(inbox_files(work / "study" / "inbox"), engine, load_sources(), load_study(), load_instruments(),
                 KEY, data_docs="none", **kwargs)
    out = table_digests(engine)
    engine.dispose()
    return out


if __name__ == "__main__":
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("ingest_reference.json")
    with tempfile.TemporaryDirectory() as tmp:
        digests = ingest_reference_study(Path(tmp))
    target.write_text(json.dumps(digests, indent=1) + "\n")
    print(f"wrote {target}: {digests}")
