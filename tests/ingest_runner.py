"""Run ingestion of an inbox in a separate process (used by the kill test): ingest_runner.py INBOX DB_URL."""

import sys

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.ingest.pseudonymise import get_pseudonym_key
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.db import get_engine, init_warehouse
from cohortflow.warehouse.load import ingest_inbox

if __name__ == "__main__":
    inbox, url = sys.argv[1], sys.argv[2]
    engine = init_warehouse(get_engine(url))
    print("ready", flush=True)
    for rep in ingest_inbox(inbox, engine, load_sources(), load_study(), load_instruments(), get_pseudonym_key()):
        print(rep.status, rep.file_name, flush=True)
