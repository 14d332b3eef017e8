# Databricks notebook source
# MAGIC %md
# MAGIC Orchestrates child notebooks, branching on their results and catching their failures.

# COMMAND ----------

import json

doubled = dbutils.notebook.run("./children/child", 60, {"n": 21})
again = dbutils.notebook.run("children/child", 60, {"n": doubled})
silent = dbutils.notebook.run("/children/child", 60, {"mode": "silent"})

try:
    dbutils.notebook.run("./children/child", 60, {"mode": "fail"})
    failure = None
except Exception as exc:
    failure = {"type": type(exc).__name__, "message": str(exc), "cause": type(exc.__cause__).__name__}

try:
    dbutils.notebook.run("./children/child", 1, {"mode": "slow"})
    timeout = None
except Exception as exc:
    timeout = {"type": type(exc).__name__, "message": str(exc)}

dbutils.notebook.exit(
    json.dumps({"doubled": doubled, "again": again, "silent": silent, "failure": failure, "timeout": timeout})
)
