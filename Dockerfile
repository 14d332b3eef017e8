# Images for docker-compose.yaml, from Airflow's official image. dags/, plugins/ and notebooks/ are
# mounted by the compose file, not baked in, so a notebook or contract change needs no rebuild.

# `runtime`: what every Airflow component runs -- the runtime package (plugins/dsbridge) and its
# pinned dependencies, nothing of the local kit.
FROM apache/airflow:3.3.2-python3.11 AS runtime
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/dsbridge/
RUN pip install --no-cache-dir -c /opt/dsbridge/constraints.txt -r /opt/dsbridge/requirements.txt
COPY --chown=airflow:0 pyproject.toml README.md /opt/dsbridge/
COPY --chown=airflow:0 plugins /opt/dsbridge/plugins
RUN pip install --no-cache-dir --no-deps /opt/dsbridge

# `local`: the compose file's `local` profile (Databricks emulator, reference service) adds the kit.
FROM runtime AS local
COPY --chown=airflow:0 local /opt/dsbridge/local
RUN pip install --no-cache-dir -c /opt/dsbridge/constraints.txt -r /opt/dsbridge/local/requirements.txt \
    && pip install --no-cache-dir --no-deps /opt/dsbridge/local
