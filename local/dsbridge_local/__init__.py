"""dsbridge's local kit: everything that runs dsbridge without a cloud, and nothing Airflow loads.

The Databricks emulator, the reference optimization service, the local stack and its supervisor,
the `dsbridge` command and the benchmark. It depends on the runtime package `dsbridge` (under
`plugins/`), never the other way round.
"""
