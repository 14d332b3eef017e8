# Databricks notebook source
# MAGIC %md
# MAGIC # Merchant approval threshold (R)
# MAGIC The R twin of `merchant_threshold`: approve orders whose fraud score is below the threshold,
# MAGIC and pick the highest threshold whose chargeback rate among approved orders meets the target.

# COMMAND ----------

library(jsonlite)

dbutils.widgets.text("merchant_id", "")
dbutils.widgets.text("target_chargeback_rate", "0.01")
dbutils.widgets.text("lookback_days", "30")
dbutils.widgets.text("orders_path", "")
dbutils.widgets.text("output_path", "")

merchant_id <- dbutils.widgets.get("merchant_id")
target <- as.numeric(dbutils.widgets.get("target_chargeback_rate"))
lookback_days <- as.integer(dbutils.widgets.get("lookback_days"))
orders_path <- dbutils.widgets.get("orders_path")
output_path <- dbutils.widgets.get("output_path")
if (merchant_id == "") stop("merchant_id is required")

# COMMAND ----------

# Deterministic orders for a merchant: the same id gives the same orders on every machine.
synthetic_orders <- function(merchant_id, days) {
  codes <- utf8ToInt(merchant_id)
  set.seed(sum(codes * seq_along(codes)) %% 2147483647)
  n <- days * 40
  riskiness <- 0.5 + runif(1)
  score <- pmin(1, rbeta(n, 1.2, 6.0) * riskiness)
  data.frame(
    fraud_score = score,
    amount = round(rlnorm(n, 3.5, 0.8), 2),
    chargeback = runif(n) < 0.9 * score^2.5
  )
}

orders_from_csv <- function(path) {
  orders <- read.csv(text = dbutils.fs.head(path, 50 * 1024 * 1024))
  orders$chargeback <- tolower(as.character(orders$chargeback)) %in% c("1", "true", "yes")
  orders
}

orders <- if (orders_path != "") orders_from_csv(orders_path) else synthetic_orders(merchant_id, lookback_days)
cat(nrow(orders), "orders for merchant", merchant_id, "\n")

# COMMAND ----------

thresholds <- seq(0, 1, by = 0.01)
total_volume <- max(sum(orders$amount), 1)
points <- lapply(thresholds, function(t) {
  approved <- orders[orders$fraud_score < t, ]
  list(
    threshold = t,
    approval_rate = round(nrow(approved) / nrow(orders), 6),
    approved_volume_share = round(sum(approved$amount) / total_volume, 6),
    approved_volume = round(sum(approved$amount), 2),
    chargeback_rate = if (nrow(approved) > 0) round(mean(approved$chargeback), 6) else 0
  )
})
feasible <- Filter(function(p) p$chargeback_rate <= target, points)
best <- feasible[[which.max(sapply(feasible, function(p) p$approved_volume + p$threshold * 1e-9))]]
print(unlist(best))

# COMMAND ----------

invisible(dbutils.fs.put(
  paste0(output_path, "curve.json"),
  toJSON(list(merchant_id = merchant_id, target_chargeback_rate = target, points = points), auto_unbox = TRUE, digits = NA),
  overwrite = TRUE
))
dbutils.notebook.exit(toJSON(list(
  merchant_id = merchant_id,
  threshold = best$threshold,
  approval_rate = best$approval_rate,
  chargeback_rate = best$chargeback_rate,
  approved_volume = best$approved_volume,
  orders = nrow(orders),
  target_chargeback_rate = target
), auto_unbox = TRUE, digits = NA))
