# The project image for docker-compose.yaml: Airflow's official image plus dsbridge's pinned
# dependencies. dags/, plugins/ and notebooks/ are mounted by the compose file, not baked in, so a
# notebook or contract change needs no rebuild.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/dsbridge/
RUN pip install --no-cache-dir -c /opt/dsbridge/constraints.txt -r /opt/dsbridge/requirements.txt

# The `dsbridge` command (for `dsbridge auth fab-role` in airflow-init) and the package's entry
# points; the code itself is the mounted ./plugins, first on the path.
COPY --chown=airflow:0 pyproject.toml README.md /opt/dsbridge/
COPY --chown=airflow:0 plugins /opt/dsbridge/plugins
RUN pip install --no-cache-dir --no-deps /opt/dsbridge
ENV PYTHONPATH=/opt/airflow/plugins
