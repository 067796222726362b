"""Who may call the prescription endpoints, and the request body that comes as JSON or multipart."""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from o2o.config import get_settings
from o2o.errors import DomainError, InvalidInput
from o2o.i18n import gettext as _
from o2o.users.dependencies import require_role
from o2o.users.models import Role, User
from prescriptions.requests import Attachment
from prescriptions.schemas import PrescriptionRequestIn

DoctorUser = Annotated[User, Depends(require_role(Role.DOCTOR))]
PharmacistUser = Annotated[User, Depends(require_role(Role.PHARMACIST))]
QueueUser = Annotated[User, Depends(require_role(Role.DOCTOR, Role.PHARMACIST))]

_FIELDS = tuple(PrescriptionRequestIn.model_fields)


def _validate(raw: Any) -> PrescriptionRequestIn:
    try:
        return PrescriptionRequestIn.model_validate(raw)
    except ValidationError as exc:
        # The same 422 `invalid_input` shape as any other body FastAPI validates.
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_context=False)]
        ) from None


async def prescription_request_body(
    request: Request,
) -> tuple[PrescriptionRequestIn, Attachment | None]:
    """Read the request as JSON, or as multipart form fields plus an optional `attachment` file."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            raw = await request.json()
        except ValueError:
            raise InvalidInput(
                _("The request body is not valid JSON."), code="malformed_json"
            ) from None
        return _validate(raw), None
    if media_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=len(_FIELDS) + 1)
        except StarletteHTTPException as exc:  # too many fields or files, or an unreadable part
            raise InvalidInput(
                _("The form could not be read: {detail}").format(detail=exc.detail),
                code="malformed_body",
            ) from None
        fields: dict[str, Any] = {}
        upload = None
        for name, value in form.multi_items():
            if name == "attachment":
                if not isinstance(value, UploadFile):
                    raise InvalidInput(
                        _("The attachment must be sent as a file."), code="invalid_attachment"
                    )
                upload = value
            elif isinstance(value, str):
                fields[name] = value
        body = _validate(fields)
        if upload is None:
            return body, None
        limit = get_settings().prescription_attachment_max_bytes
        # One byte more than allowed is enough for the service to know it is too large.
        data = await upload.read(limit + 1)
        await upload.close()
        return body, Attachment(
            data=data, filename=upload.filename, declared_type=upload.content_type
        )
    raise DomainError(
        _("Send the request as application/json or multipart/form-data."),
        code="unsupported_media_type",
        status_code=415,
    )


RequestBody = Annotated[
    tuple[PrescriptionRequestIn, Attachment | None], Depends(prescription_request_body)
]


def request_body_openapi() -> dict:
    """Document both request encodings of `POST /prescriptions` in OpenAPI."""
    schema = PrescriptionRequestIn.model_json_schema()
    multipart = {
        **schema,
        "properties": {
            **schema["properties"],
            "attachment": {
                "type": "string",
                "format": "binary",
                "description": "JPEG, PNG or PDF, at most 10 MB (checked by content).",
            },
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": multipart},
            },
        }
    }
