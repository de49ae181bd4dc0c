"""SubmissionService servicer: proto ↔ the submission use cases (service/submissions.py); no rules here."""

from __future__ import annotations

from molbridge.cro.v1 import cro_service_pb2_grpc as pb_grpc


class SubmissionServicer(pb_grpc.SubmissionServiceServicer):
    SERVICE_FULL_NAME = "molbridge.cro.v1.SubmissionService"

    def __init__(self, service: object) -> None:
        self._service = service
