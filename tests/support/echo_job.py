"""A job that is not chatllm's, to show that a job is one table entry and one
module (tests/test_job_table.py)."""

from __future__ import annotations

from chatllm.engine.base import GenerationParams, Message
from chatllm.jobs.job import Plan, Setup
from chatllm.reply.meter import Meter
from chatllm.reply.pipeline import Events, call, finished


class EchoJob:
    template = "echo"
    repetition = "off"
    record = None

    def __init__(self, setup: Setup) -> None:
        self.messages = [Message("user", " ".join(setup.values["words"]))]
        self.params = GenerationParams(temperature=0.0, max_tokens=setup.sampling.get("max_tokens"))

    def plan(self) -> Plan:
        return Plan(self.messages, self.params)

    def run(self, meter: Meter) -> Events:
        return finished(meter, call(meter, self.messages, self.params))


def prepare(setup: Setup) -> EchoJob:
    return EchoJob(setup)
