"""The one Settings object, read from environment variables (prefix O2O_) and an optional .env."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development defaults, clearly marked: they match the project-local cluster started by
# scripts/platform.sh and are used only when O2O_ENV is development or test, chosen explicitly.
DEV_SECRET_KEY = "dev-only-secret-key-change-me-in-production-0000000000"
DEV_DATABASE_URL = "postgresql+psycopg://o2o_app:o2o-app-dev-only@127.0.0.1:55432/o2o"
DEV_REDIS_URL = "redis://127.0.0.1:56379/0"


class Settings(BaseSettings):
    # hide_input_in_errors: a refusal never prints the values it was given (they hold secrets).
    model_config = SettingsConfigDict(
        env_prefix="O2O_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # Production unless development or test is chosen explicitly: a forgotten variable then
    # fails closed (no development secret, no development database) instead of open.
    env: Literal["development", "test", "production"] = "production"
    database_url: str = DEV_DATABASE_URL
    redis_url: str = DEV_REDIS_URL
    # One key per purpose, so a leak of one (or its rotation) does not touch the others. In
    # development and test each defaults to a key derived from the published development key;
    # elsewhere each must be set, random, 32+ characters and distinct (docs/SECURITY.md).
    token_secret_key: SecretStr | None = None
    session_secret_key: SecretStr | None = None
    identity_pepper: SecretStr | None = None
    # The identity pepper's version, stored with every hash it makes, and the earlier peppers
    # still tried when matching: "version:secret" entries, comma-separated (docs/SECURITY.md,
    # rotating the identity pepper).
    identity_pepper_version: int = Field(1, ge=1, le=32767)
    identity_pepper_previous: SecretStr | None = None
    # The owner role's URL, for development tools that empty a database (the simulation's day
    # reset, the test suite's clean-up); never set for the API, the worker or beat.
    owner_database_url: SecretStr | None = None
    # Bearer token for /metrics; without it /metrics answers 404 outside development and test.
    metrics_token: SecretStr | None = None
    # Kept for development and test only: the root the per-purpose development keys derive from.
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)

    access_token_minutes: int = Field(60, ge=1, le=24 * 60)
    # Pinned to HMAC algorithms: "none" and public-key algorithms are never accepted.
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"

    # Failed logins allowed per account-and-address pair, and per address, in the window, then
    # 429; past the account-wide ceiling, addresses the account never signed in from wait a
    # doubling delay (o2o/users/throttle.py). Nobody can hold the owner's sign-in.
    login_failures_allowed: int = Field(5, ge=1)
    login_failure_window_seconds: int = Field(300, ge=1)
    login_account_ceiling: int = Field(20, ge=1)
    # Reverse proxies whose X-Forwarded-For is believed (comma-separated addresses or networks);
    # the client address is the last one in the header that is not a trusted proxy.
    trusted_proxies: str = ""

    # Sign-ups per client address (limits syntax: "N/period").
    register_rate_limit: str = "10/hour"
    # Password reset: minutes a reset token stays valid, and requests per email address and per
    # client address (limits syntax), the same answer whether or not the account exists.
    password_reset_token_minutes: int = Field(30, ge=5, le=24 * 60)
    password_reset_email_rate_limit: str = "5/hour"
    password_reset_address_rate_limit: str = "20/hour"

    max_body_bytes: int = 11 * 1024 * 1024

    sla_minutes: int = Field(120, ge=1)

    # Store search: the widest radius a search may cover (so it never scans a whole country),
    # and searches per client address (anyone may search, signed in or not).
    search_max_radius_m: float = Field(50_000, gt=0, le=500_000)
    search_rate_limit: str = "60/minute"
    # Order placements per patient (retries with the same Idempotency-Key count too).
    order_rate_limit: str = "30/minute"

    # Orders: how long stock is held waiting for a prescription, and for a pickup once ready.
    rx_wait_hours: int = Field(24, ge=1, le=24 * 7)
    pickup_hold_hours: int = Field(48, ge=1, le=24 * 14)
    # Payments: minutes an online order's stock is held for its payment; unpaid orders a patient
    # may hold at once; units of one product a patient may hold across open orders; how far a
    # payment app's signature timestamp may be from our clock; hours a rotated-out app secret
    # still verifies.
    payment_minutes: int = Field(15, ge=1, le=24 * 60)
    max_unpaid_orders: int = Field(3, ge=1)
    max_open_units_per_product: int = Field(200, ge=1)
    payment_signature_tolerance_s: int = Field(300, ge=1, le=3600)
    payment_secret_grace_hours: int = Field(24, ge=0, le=24 * 30)
    # Wrong pickup codes allowed per order before the code is locked.
    pickup_code_max_failures: int = Field(5, ge=1, le=20)
    # Idempotency-Key: how long a first response is replayed, and after how long an unfinished
    # request (its process died) no longer blocks its key.
    idempotency_ttl_hours: int = Field(24, ge=24)
    idempotency_stale_seconds: int = Field(60, ge=5)

    # Prescriptions: minutes a request may wait for a doctor before it escalates, minutes an
    # issued prescription may wait for the store's pharmacist before the store is flagged.
    prescription_claim_minutes: int = Field(15, ge=1)
    # Requests a doctor may hold claimed at once, and minutes a claim may wait for the doctor to
    # prepare the prescription before it goes back to the queue.
    prescription_max_open_claims: int = Field(5, ge=1, le=50)
    prescription_claim_timeout_minutes: int = Field(20, ge=1)
    prescription_review_minutes: int = Field(30, ge=1)
    # Minutes a doctor has to sign the challenge that proves holding a newly registered key
    # (a new challenge can be asked for after that).
    doctor_key_challenge_minutes: int = Field(15, ge=1, le=24 * 60)
    # Validity a doctor may give (DESIGN.md: default 24 h, at most 72 h).
    prescription_default_valid_hours: int = Field(24, ge=1, le=72)
    prescription_max_valid_hours: int = Field(72, ge=1, le=72)
    # A prepared signing payload must be signed within this many minutes.
    prescription_signing_window_minutes: int = Field(30, ge=1)
    # Warn the pharmacist when the patient had the same medicine dispensed this recently.
    prescription_repeat_warning_days: int = Field(7, ge=0)
    # Medicines dispensed to the patient this many days back count as current medication for the
    # interaction check (with the patient's open orders).
    interaction_lookback_days: int = Field(90, ge=0, le=3650)
    prescription_attachment_max_bytes: int = Field(10 * 1024 * 1024, ge=1)
    # Attachments a patient may keep stored at once (all requests), requests a patient may open,
    # and days the attachment of a cancelled or expired request is kept before it is purged
    # (the audit trail keeps its hash).
    prescription_attachment_quota_bytes: int = Field(50 * 1024 * 1024, ge=1)
    prescription_request_rate_limit: str = "10/hour"
    prescription_attachment_retention_days: int = Field(30, ge=1)

    # Dispatch: active jobs a courier may hold, how far from a courier a job's store may be (wider
    # for escalated jobs), minutes a claim may wait for pickup before the job returns to the pool,
    # the width of the deadline buckets within which nearer jobs go first, wrong delivery codes
    # allowed before the job is locked for the store, and courier location updates accepted.
    dispatch_max_active_jobs: int = Field(2, ge=1, le=10)
    dispatch_radius_m: float = Field(5000, gt=0, le=100_000)
    dispatch_escalated_radius_m: float = Field(12000, gt=0, le=200_000)
    # How fast an escalated job's ring grows to the wide radius (metres a minute, from the 2 km
    # it starts at when the job opens; any job's grows 600 a minute to the radius). A very large
    # value shows an escalated job across the wide radius at once, as before: then a courier 12 km
    # away could take it first and ride half an hour to the store. On the simulation's peak
    # preset 600 kept 100.0% on time with a median of 41.8 minutes (seed 11) and 99.6% with
    # 42.8 (seed 12, where at once kept 97.7% with 47.4); in the storm it broke 25 promises
    # silently against 22 at once, and 1,800 broke 11 but missed the peak's median
    # (docs/BENCHMARKS.md).
    dispatch_escalated_ring_growth_m_per_min: float = Field(600, gt=0)
    # Long enough to ride across the radius (5 km x 1.35 detour at 18 km/h is about 23 minutes):
    # a shorter limit sweeps honest claims back to the pool while the courier is on the way. A
    # courier who claims from further off (an escalated job's wide ring) has their ride to the
    # store and half this (`dispatch.pool.pickup_due`).
    dispatch_claim_timeout_minutes: int = Field(30, ge=1)
    # Twenty minutes: within a bucket the nearer store goes first, so couriers ride less to
    # stores. On the simulation's peak preset (seed 11) the median delivery took 46.5 minutes
    # with 10-minute buckets, 44.8 with 20 and 41.3 with 30; but in the storm, 30-minute buckets
    # let nearer jobs overtake more, and broke 39 promises silently against 14 (docs/BENCHMARKS.md).
    dispatch_deadline_bucket_minutes: int = Field(20, ge=1, le=120)
    # Just-in-time preparation: while orders outpace the fleet around a store, advise it to hold
    # a new delivery until just before its courier's turn (`prepare_from`). Off by default: on the
    # storm preset it cut silent breaks from 95 to 33, but on the peak preset it raised the median
    # delivery above the 45-minute target (docs/BENCHMARKS.md).
    dispatch_jit_preparation: bool = False
    # A delivery's job opens this many minutes before its order is due ready (the store's
    # preparation time after it starts), so a courier rides to the store while it is prepared
    # and meets the parcel there; 0 opens it when the order is ready. On the simulation's peak
    # preset five minutes took the median delivery from 49.4 to 42.7 minutes (seed 13), 43.8 to
    # 37.0 (seed 11) and 44.5 to 40.9 (seed 12) at bde15e5; eight took seed 13 to 42.0 but made
    # the storm later, its couriers waiting longer at counters (docs/BENCHMARKS.md).
    dispatch_open_before_ready_minutes: float = Field(5, ge=0, le=30)
    dispatch_code_max_failures: int = Field(5, ge=1, le=20)
    courier_location_rate_limit: str = "1/5 seconds"
    # Private drop-offs: until a courier claims a job, others see its drop-off snapped to a fixed
    # grid of cells about this many metres on a side, without the address; a courier's claims
    # that take a job, and releases, per window (429 beyond; the HTTP API only).
    dispatch_dropoff_grid_m: float = Field(200, ge=100, le=2000)
    dispatch_claim_rate_limit: str = "30/hour"
    dispatch_release_rate_limit: str = "20/hour"
    # Batched trips: parcels one courier may carry from one store in a trip, and the minutes a
    # batch-mate may add to the trip (the first drop never waits longer than that either).
    dispatch_batch_max_parcels: int = Field(3, ge=1, le=10)
    dispatch_batch_max_detour_minutes: float = Field(20, ge=0, le=120)
    # The fleet-aware promise: the courier-wait estimate a store's search and checkout add is
    # ignored when older than this (dispatch refreshes it every minute).
    fleet_load_max_age_minutes: float = Field(5, gt=0)
    # Delivery slots: window length, and how many days ahead (today and tomorrow = 2).
    delivery_slot_minutes: int = Field(60, ge=15, le=240)
    delivery_slot_days: int = Field(2, ge=1, le=7)

    # SLA monitor: an open delivery is at risk when its predicted finish is later than the
    # deadline minus this margin; minutes a ready order waits for a courier to claim it and reach
    # the store, and to hand it over at the door, when nothing better is known.
    sla_risk_margin_minutes: int = Field(15, ge=0)
    # As the store starts on a delivery, the margin is this wide instead: the last moment the
    # patient can hear of a changed promise before the store spends work on the order, and the
    # fleet's wait moves by many minutes in an evening storm (the storm preset broke 87 promises
    # silently with the monitor's margin here, 35 with 30 minutes and 14 with 45; with the
    # promise counting only the couriers who may take a store's jobs, 5 with 45 and 2 with 60).
    # Telling early does not move the job ahead of others (see dispatch.monitor), so a wide
    # margin costs the peak nothing but notices to patients whose parcel then comes on time.
    sla_risk_margin_before_preparing_minutes: int = Field(60, ge=0)
    sla_courier_wait_minutes: float = Field(10, ge=0)
    sla_handover_minutes: float = Field(2, ge=0)
    # After a breach: "waive_delivery_fee", "fixed" (sla_compensation_fixed_minor, capped at the
    # order total) or "none".
    sla_compensation: Literal["waive_delivery_fee", "fixed", "none"] = "waive_delivery_fee"
    sla_compensation_fixed_minor: int = Field(0, ge=0)

    # Members: points per whole currency unit (100 minor units) of what a completed order cost
    # the patient, the days a point stays before it expires, the 12-month spend (minor units)
    # each level starts at, and the lowest level whose orders are delivered free.
    member_points_per_unit: int = Field(1, ge=0, le=100)
    member_points_expire_days: int = Field(365, ge=1, le=3650)
    member_silver_spend_minor: int = Field(50_000, ge=1)
    member_gold_spend_minor: int = Field(150_000, ge=1)
    member_platinum_spend_minor: int = Field(400_000, ge=1)
    member_free_delivery_level: Literal["silver", "gold", "platinum", "none"] = "gold"

    # Stock analytics: a lot expiring within this many days of the store's local today is "near
    # expiry"; the longest period an analysis may cover.
    analytics_near_expiry_days: int = Field(90, ge=0, le=3650)
    analytics_max_days: int = Field(366, ge=1, le=3660)

    # Webhooks (outbox relay): per-request timeout, attempts before a delivery is given up,
    # exponential backoff, deliveries per relay run, and how far back the fan-out re-reads
    # events (longer than any transaction, so an event committed late is still seen).
    webhook_timeout_s: float = Field(5, gt=0, le=60)
    webhook_max_attempts: int = Field(12, ge=1, le=50)
    webhook_backoff_base_s: float = Field(10, gt=0)
    webhook_backoff_max_s: float = Field(3600, gt=0)
    webhook_batch_size: int = Field(20, ge=1, le=500)
    outbox_fanout_lag_s: int = Field(600, ge=0)
    # Hosts a registered URL may name although they are inside (comma-separated), honoured in
    # development and test only: a local receiver, the development payment app (o2o/outbound.py).
    outbound_allowed_hosts: str = ""

    # Celery: seconds before a task taken by a worker that died is handed out again.
    task_visibility_timeout_s: int = Field(300, ge=10)

    # The sync endpoints' pool; `db_pool_size` is also the fixed size of the async writers' pool
    # (placing an order: o2o.db.WriterRunner), whose transactions may wait on row locks while
    # they hold their connection (docker-compose.yml counts a worker's connections).
    db_pool_size: int = 10
    db_max_overflow: int = 20
    # The async endpoints' pool (hot reads, claims): a fixed number of connections kept open, no
    # overflow. Each async request holds one connection at a time, so requests beyond it wait
    # their turn in the event loop; overflow connections would be opened and closed again under
    # every burst, and on two cores a few connections serve more requests than many do
    # (docs/BENCHMARKS.md, "Load").
    db_async_pool_size: int = Field(6, ge=1, le=100)

    @model_validator(mode="after")
    def _secrets_fail_closed(self) -> "Settings":
        purposes = ("token_secret_key", "session_secret_key", "identity_pepper")
        if self.env in ("development", "test"):
            root = self.secret_key.get_secret_value()
            for name in purposes:
                if getattr(self, name) is None:
                    setattr(self, name, SecretStr(f"{root}:{name}"))
            problems = self._pepper_version_problems()
            if problems:
                raise ValueError("; ".join(problems))
            return self
        problems = self._pepper_version_problems()
        seen: set[str] = set()
        for name in purposes:
            value = getattr(self, name)
            secret = value.get_secret_value() if value is not None else ""
            if len(secret) < 32 or DEV_SECRET_KEY in secret:
                problems.append(
                    f"O2O_{name.upper()} must be set to a random value of 32+ characters"
                )
            elif secret in seen:
                problems.append(f"O2O_{name.upper()} must differ from the other keys")
            seen.add(secret)
        others = {
            self.key("token_secret_key") if self.token_secret_key else None,
            self.key("session_secret_key") if self.session_secret_key else None,
        }
        try:
            previous = _parse_previous_peppers(self.identity_pepper_previous)
        except ValueError:
            previous = {}  # already reported by _pepper_version_problems
        for version, secret in previous.items():
            if len(secret) < 32 or DEV_SECRET_KEY in secret:
                problems.append(
                    f"O2O_IDENTITY_PEPPER_PREVIOUS: version {version} must be a random value of "
                    "32+ characters"
                )
            elif secret in others:
                problems.append(
                    f"O2O_IDENTITY_PEPPER_PREVIOUS: version {version} must differ from the other keys"
                )
        if self.database_url == DEV_DATABASE_URL:
            problems.append("O2O_DATABASE_URL must be set (not the development database)")
        if problems:
            raise ValueError(f"O2O_ENV={self.env}: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _member_levels_ascend(self) -> "Settings":
        if not (
            self.member_silver_spend_minor
            < self.member_gold_spend_minor
            < self.member_platinum_spend_minor
        ):
            raise ValueError("member level spends must ascend: silver < gold < platinum")
        return self

    def _pepper_version_problems(self) -> list[str]:
        """What is wrong with the identity peppers' versions (in every environment)."""
        try:
            previous = _parse_previous_peppers(self.identity_pepper_previous)
        except ValueError as exc:
            return [str(exc)]
        problems = []
        if self.identity_pepper_version in previous:
            problems.append(
                f"O2O_IDENTITY_PEPPER_PREVIOUS lists version {self.identity_pepper_version}, "
                "which is O2O_IDENTITY_PEPPER_VERSION (the current pepper's version)"
            )
        current = self.identity_pepper.get_secret_value() if self.identity_pepper else None
        secrets = [current, *previous.values()]
        if len(set(secrets)) != len(secrets):
            # Two versions with one secret would make the version meaningless, and a rotation
            # that did not rotate anything.
            problems.append("two identity pepper versions must not share a secret")
        return problems

    def key(
        self, name: Literal["token_secret_key", "session_secret_key", "identity_pepper"]
    ) -> str:
        """Return the secret for one purpose (set for every environment once validated)."""
        value = getattr(self, name)
        assert value is not None
        return value.get_secret_value()

    def identity_peppers(self) -> dict[int, str]:
        """Every configured identity pepper by version, the current one first."""
        return {
            self.identity_pepper_version: self.key("identity_pepper"),
            **_parse_previous_peppers(self.identity_pepper_previous),
        }


def _parse_previous_peppers(value: SecretStr | None) -> dict[int, str]:
    """Read "version:secret" entries (comma-separated) into {version: secret}."""
    peppers: dict[int, str] = {}
    if value is None:
        return peppers
    for entry in value.get_secret_value().split(","):
        entry = entry.strip()
        if not entry:
            continue
        version, sep, secret = entry.partition(":")
        # Never echo the entry: it holds a secret.
        if not sep or not version.strip().isdigit() or not secret.strip():
            raise ValueError("O2O_IDENTITY_PEPPER_PREVIOUS entries must be version:secret")
        number = int(version)
        if not 1 <= number <= 32767:
            raise ValueError("O2O_IDENTITY_PEPPER_PREVIOUS versions must be 1 to 32767")
        if number in peppers:
            raise ValueError(f"O2O_IDENTITY_PEPPER_PREVIOUS lists version {number} twice")
        peppers[number] = secret.strip()
    return peppers


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, read once."""
    return Settings()
