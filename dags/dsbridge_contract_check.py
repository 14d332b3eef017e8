"""Airflow import error for every invalid job contract, naming the file, the field and the fix.

It defines no DAG. While all contracts are valid it loads silently; otherwise the Airflow UI shows
this file's import error with one line per broken `job.yaml`. The valid jobs keep loading from
`dsbridge_jobs.py`.
"""

from dsbridge.contract import discover_contracts
from dsbridge.contract.model import InvalidContracts
from dsbridge.settings import notebooks_dir

_, _errors = discover_contracts(notebooks_dir())
if _errors:
    raise InvalidContracts(_errors)
