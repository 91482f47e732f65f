"""drover: producers and workers for the drover job queue.

>>> import drover
>>> producer = drover.Producer("127.0.0.1:7070")             # doctest: +SKIP
>>> job_id = producer.enqueue("emails", b"payload", priority=2)  # doctest: +SKIP
"""

from .errors import DroverError, JobError
from .producer import Enqueued, JobEvent, JobInfo, NewJob, Producer
from .worker import Job, Worker

__all__ = [
    "DroverError",
    "Enqueued",
    "Job",
    "JobError",
    "JobEvent",
    "JobInfo",
    "NewJob",
    "Producer",
    "Worker",
]
