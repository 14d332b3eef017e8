# Databricks notebook source
dbutils.widgets.text("orders", "")
dbutils.widgets.text("merchant", "m_1")

# COMMAND ----------

orders = spark.read.option("header", True).option("inferSchema", True).csv(dbutils.widgets.get("orders"))
orders.createOrReplaceTempView("orders")

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT merchant, COUNT(*) AS n, ROUND(SUM(amount), 2) AS total
# MAGIC FROM orders
# MAGIC WHERE merchant = '${merchant}'
# MAGIC GROUP BY merchant

# COMMAND ----------

import json

row = _sqldf.collect()[0]
_sqldf.write.mode("overwrite").json(dbutils.widgets.get("orders").rsplit("/", 1)[0] + "/summary")
dbutils.notebook.exit(json.dumps({"merchant": row["merchant"], "n": row["n"], "total": row["total"]}))
