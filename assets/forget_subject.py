"""forget_subject_job: the right to erasure for one data subject of one tenant, across every store."""

from dagster import Config, OpExecutionContext, job, op

from amem_dagster.erasure import erase_subject
from amem_dagster.k8s_tags import CPU_STEP_TAGS
from resources.kafka import KafkaResource
from resources.milvus import MilvusResource
from resources.placement import PlacementResource
from resources.postgres import PostgresResource


class ForgetSubjectConfig(Config):
    """Whose memories to erase."""

    tenant_id: str
    subject_id: str


@op(tags=CPU_STEP_TAGS)
def forget_subject(context: OpExecutionContext, config: ForgetSubjectConfig, postgres: PostgresResource,
                   milvus: MilvusResource, kafka: KafkaResource, placement: PlacementResource) -> dict:
    """Erase the subject's events and vectors everywhere, record it in the ledger, announce it and audit it."""
    report = erase_subject(postgres, milvus, kafka, config.tenant_id, config.subject_id, placement.region_list(),
                           actor=f"dagster run {context.run_id}")
    # Counts only: the subject id stays out of logs and metadata.
    context.log.info(f"erased a subject of tenant {report.tenant_id}: {report.removed}")
    return report.removed


@job(description="Right to erasure: run config names tenant_id and subject_id.", tags={"amem/lifecycle": "erasure"})
def forget_subject_job():
    forget_subject()
