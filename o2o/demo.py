"""Demo data for development: the demo accounts of the API docs (and, from the stores issue on,
a demo city). Idempotent: running it again changes nothing that exists."""

from dataclasses import dataclass

from sqlalchemy.orm import Session

from o2o.users import service as users_service
from o2o.users.models import Role

DEMO_PASSWORD = "demo-password"


@dataclass(frozen=True)
class DemoAccount:
    email: str
    name: str
    role: Role


DEMO_ACCOUNTS = (
    DemoAccount("admin@example.com", "Ada Admin", Role.ADMIN),
    DemoAccount("doctor@example.com", "Dr. Li Wei", Role.DOCTOR),
    DemoAccount("pharmacist@example.com", "Pat Pharmacist", Role.PHARMACIST),
    DemoAccount("courier@example.com", "Cory Courier", Role.COURIER),
    DemoAccount("patient@example.com", "Pia Patient", Role.PATIENT),
)


def load_demo_accounts(session: Session) -> list[str]:
    """Create the demo accounts that do not exist yet; return the emails created."""
    created = []
    for account in DEMO_ACCOUNTS:
        if users_service.get_by_email(session, account.email) is None:
            users_service.create_user(
                session,
                email=account.email,
                password=DEMO_PASSWORD,
                name=account.name,
                role=account.role,
            )
            created.append(account.email)
    return created
