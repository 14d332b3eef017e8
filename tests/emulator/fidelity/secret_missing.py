# Databricks notebook source
dbutils.secrets.get("payments", "nope")
