"""The pydantic models of the job API and of the Durable boundary, gathered from their rooms:
``request_models`` (what clients send: ``OPERATIONS``), ``task_models`` (what orchestrators and
activities pass each other), ``job_models`` (a job's progress, result and metrics) and
``job_history`` (a job's tasks read from histories). Loading them loads neither GDAL nor PROJ.
"""
from __future__ import annotations

from job_history import TaskNames, TaskRecord  # noqa: F401
from job_models import *  # noqa: F401,F403
from job_models import CHUNKS_NAMED, FAILURES_SHOWN, chunk_instance_id  # noqa: F401
from request_models import *  # noqa: F401,F403
from request_models import (CHUNKS_IN_FLIGHT, IMPORT_CHUNK_SIZE, LINE_BREAKS, OPERATIONS,  # noqa: F401
                            SYNC_CHUNK_SIZE, instance_id_for, problems_of, refuse_control_characters)
from task_models import *  # noqa: F401,F403
from task_models import PLAN_NAMES_SHOWN  # noqa: F401
