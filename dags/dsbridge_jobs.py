"""Airflow DAGs for every notebook job: one DAG per `notebooks/<job>/job.yaml`.

Treat this file as configuration: the factory in `dsbridge.dag_factory` builds each DAG from its
contract. Jobs with an invalid contract are left out here and reported as an import error by
`dsbridge_contract_check.py`, so one bad job never hides the others.
"""

from dsbridge.contract import discover_contracts
from dsbridge.dag_factory import build_job_dag
from dsbridge.settings import notebooks_dir

_contracts, _ = discover_contracts(notebooks_dir())
for _contract in _contracts:
    globals()[_contract.name] = build_job_dag(_contract)
