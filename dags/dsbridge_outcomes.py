"""Airflow DAG `dsbridge_outcomes`: final events of job runs cancelled by the caller or timed out.

Started by the dsbridge outcome listener, never by hand; see `dsbridge.outcomes_dag`.
"""

from dsbridge.outcomes_dag import build_outcomes_dag

dag = build_outcomes_dag()
