# Databricks notebook source
# MAGIC %md
# MAGIC # Bench sleeper
# MAGIC Sleeps `seconds`, so the bench knows the notebook's own running time exactly.

# COMMAND ----------

import json
import time

dbutils.widgets.text("seconds", "5")
seconds = float(dbutils.widgets.get("seconds"))
time.sleep(seconds)
dbutils.notebook.exit(json.dumps({"slept": seconds}))
