# Databricks notebook source
dbutils.jobs.taskValues.set(key="threshold", value={"value": 0.42})
