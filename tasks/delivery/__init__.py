"""Delivery: hand messages to providers exactly once, reconcile the unknown, poll and apply delivery statuses."""
from providers.registry import deliver_reports_to
from tasks.delivery.track import store_pushed_reports

# Reports that reach a provider on its own connection (SMPP receipts) are written by the process that holds
# the connection: installed with this package, so it is in place before any provider of a delivery step opens.
deliver_reports_to(store_pushed_reports)
