# Databricks notebook source
dbutils.widgets.help()
token <- dbutils.secrets.get("payments", "api_token")
print(paste("the token is", token))

# COMMAND ----------

doubled <- dbutils.notebook.run("./children/child", 60, list(n = 21))
failure <- tryCatch(
  {
    dbutils.notebook.run("./children/child", 60, list(mode = "fail"))
    "none"
  },
  error = function(e) conditionMessage(e)
)
missing <- tryCatch(dbutils.secrets.get("payments", "nope"), error = function(e) conditionMessage(e))
dbutils.notebook.exit(jsonlite::toJSON(list(doubled = doubled, failure = failure, missing = missing, n = nchar(token)), auto_unbox = TRUE))
