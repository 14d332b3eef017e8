# Databricks notebook source
# MAGIC %md
# MAGIC # Bench sleeper, ten minutes
# MAGIC The bench sleeper itself, inlined; only the contract beside this notebook differs.

# COMMAND ----------

# MAGIC %run ../bench_sleep/bench_sleep
