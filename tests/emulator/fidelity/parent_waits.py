# Databricks notebook source
dbutils.notebook.run("./children/child", 0, {"mode": "slow"})
