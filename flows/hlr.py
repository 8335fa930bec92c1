"""The hlr-check flow: phone checks started from the Prefect UI's form."""
from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks.delivery.hlr import PhoneCheckRun, check_phones, phones_from


@task(name="check phones", cache_policy=NO_CACHE)
def check(phones: list[str], run_id: str) -> PhoneCheckRun:
    return check_phones(phones, flow_run_id=run_id)


@flow(name="hlr-check")
def hlr_check(phones: list[str]) -> dict[str, int]:
    """Check whether numbers are live and reachable; a single entry may be the path of a task file."""
    result = check(phones_from(phones), str(flow_run.get_id()))
    logger = get_run_logger()
    for bad in result.invalid:
        logger.warning("not checked: %s", bad["reason"])
    create_table_artifact(
        [{"phone": r["phone"], "status": r["status"], "operator": r["operator"] or "", "roaming": r["roaming"],
          "ported": r["ported"], "price": str(r["price"])} for r in result.checked]
        + [{"phone": b["phone"], "status": "not checked", "operator": b["reason"], "roaming": "", "ported": "", "price": "0"} for b in result.invalid],
        key="hlr-check", description=f"{len(result.checked)} numbers checked, total price {result.total_price}",
    )
    return {"checked": len(result.checked), "invalid": len(result.invalid)}
