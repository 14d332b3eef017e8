# Databricks notebook source
import json

value = dbutils.jobs.taskValues.get(taskKey="produce", key="threshold", default={"value": -1})
fallback = dbutils.jobs.taskValues.get(taskKey="produce", key="absent", default="dflt")
dbutils.notebook.exit(json.dumps({"value": value, "fallback": fallback}))
