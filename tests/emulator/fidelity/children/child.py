# Databricks notebook source
dbutils.widgets.text("mode", "ok")
dbutils.widgets.text("n", "0")
mode = dbutils.widgets.get("mode")

# COMMAND ----------

import time

if mode == "fail":
    raise KeyError("missing column amount")
if mode == "slow":
    time.sleep(30)
if mode == "silent":
    pass
else:
    dbutils.notebook.exit(str(int(dbutils.widgets.get("n")) * 2))
