"""The error a request is answered with: a status and OpenAI's error JSON."""

from __future__ import annotations

from typing import Any


class RequestError(Exception):
    """A request the server answers with `status` and OpenAI's error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.headers = headers or {}  # sent with the answer (a 503's Retry-After)

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.code}}
