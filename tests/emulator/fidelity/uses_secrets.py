# Databricks notebook source
import json

token = dbutils.secrets.get(scope="payments", key="api_token")
print(f"the token is {token}")  # a workspace shows [REDACTED]

# COMMAND ----------

try:
    dbutils.secrets.get("payments", "missing")
    missing = "found?"
except:
    missing = "refused"

scopes = [s.name for s in dbutils.secrets.listScopes()]
keys = [k.key for k in dbutils.secrets.list("payments")]
dbutils.notebook.exit(
    json.dumps({"missing": missing, "scopes": scopes, "keys": keys, "echo": token, "length": len(token)})
)
