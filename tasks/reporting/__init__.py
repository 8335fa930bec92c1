"""Reporting: what people see of a task: the Excel report, the history export, the Prefect UI artifacts."""
