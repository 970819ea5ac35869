"""Run ingestion of an inbox in a separate process (kill and concurrency tests):
ingest_runner.py INBOX DB_URL [file|batch] (file: `ingest_inbox`, file by file, the default; batch: `ingest_files`)."""

import sys

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.ingest.pseudonymise import get_pseudonym_key
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.batch_ingest import ingest_files
from cohortflow.warehouse.db import get_engine, init_warehouse
from cohortflow.warehouse.load import inbox_files, ingest_inbox

if __name__ == "__main__":
    inbox, url = sys.argv[1], sys.argv[2]
    engine = init_warehouse(get_engine(url))
    print("ready", flush=True)
    args = (engine, load_sources(), load_study(), load_instruments(), get_pseudonym_key())
    if len(sys.argv) > 3 and sys.argv[3] == "batch":
        reports = ingest_files(inbox_files(inbox), *args, data_docs="none")
    else:
        reports = ingest_inbox(inbox, *args)
    for rep in reports:
        print(rep.status, rep.file_name, flush=True)
