"""Error taxonomy shared by every service: one root, each class knowing its
HTTP status, OpenAI error type and gRPC code."""

from __future__ import annotations

import grpc

from switchyard.v1 import chat_pb2 as pb


class SwitchyardError(Exception):
    status = 500
    type = "api_error"
    code: str | None = None
    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after_ms: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_ms = retry_after_ms

    def to_proto(self) -> pb.Error:
        return pb.Error(status=self.status, type=self.type, code=self.code or "", message=self.message,
                        param=self.param or "", retry_after_ms=self.retry_after_ms)

    def envelope(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequestError(SwitchyardError):
    status = 400
    type = "invalid_request_error"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class AuthenticationError(SwitchyardError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(SwitchyardError):
    status = 403
    type = "permission_error"
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class NotFoundError(SwitchyardError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    grpc_code = grpc.StatusCode.NOT_FOUND


class PayloadTooLargeError(SwitchyardError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class UnavailableError(SwitchyardError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE



def error_envelope(err: pb.Error) -> dict:
    """The OpenAI error body for a proto Error."""
    return {"error": {"message": err.message, "type": err.type or "api_error", "param": err.param or None,
                      "code": err.code or None}}
