# Databricks notebook source
# MAGIC %md
# MAGIC # The SDK's runtime module
# MAGIC Libraries and modern notebooks import `dbutils` and friends instead of using the globals.

# COMMAND ----------

from databricks.sdk.runtime import dbutils, display, displayHTML, getArgument

dbutils.widgets.text("answer", "none")
dbutils.widgets.help()

# COMMAND ----------

display({"shown": True})
displayHTML("<b>bold</b>")
dbutils.notebook.exit(value=getArgument("answer"))
