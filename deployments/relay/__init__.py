"""The Alertmanager relay: webhook alerts in, Prefect events out (see app.py)."""
