"""A Python worker: reverses each payload of queue "reverse".

    pip install ./clients/python
    drover serve &
    drover enqueue --queue reverse --payload hello
    python examples/python_worker.py 127.0.0.1:7070
"""

import sys

import drover

worker = drover.Worker(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7070", queues=["reverse"], concurrency=4)


@worker.handler("reverse")
def reverse(job: drover.Job) -> bytes:
    if not job.payload:
        raise drover.JobError("empty", "nothing to reverse")
    return job.payload[::-1]


if __name__ == "__main__":
    worker.run()  # until SIGTERM or ctrl-c
