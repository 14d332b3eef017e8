"""dsbridge: Databricks notebooks as callable, reliable APIs, orchestrated by Airflow 3."""
