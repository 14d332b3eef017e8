# Databricks notebook source
import json

dbutils.widgets.text("answer", "")
answer = dbutils.widgets.get("answer")
try:
    value = float(answer)
except ValueError:
    value = answer
dbutils.fs.put(dbutils.widgets.get("output_path") + "answer.json", json.dumps({"answer": value}), True)
