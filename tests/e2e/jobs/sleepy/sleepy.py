# Databricks notebook source
import json
import time

dbutils.widgets.text("seconds", "1")
seconds = float(dbutils.widgets.get("seconds"))
print(f"sleeping {seconds}s", flush=True)
time.sleep(seconds)
dbutils.notebook.exit(json.dumps({"slept": seconds}))
