# Databricks notebook source
# MAGIC %run "./lib/helpers"

# COMMAND ----------

import json

dbutils.widgets.text("merchant id", "m_default", "Merchant id")
dbutils.widgets.text("config", "{}")
config = json.loads(dbutils.widgets.get("config"))
try:
    optional = dbutils.widgets.get("not declared")
except:
    optional = None

# COMMAND ----------

dbutils.notebook.exit(
    json.dumps({"merchant": dbutils.widgets.get("merchant id"), "limit": double(config["limit"]), "optional": optional})
)
