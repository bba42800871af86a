"""The four REST APIs the sandboxes play, each shaped like the real one (docs/sources.md).

An API owns its records' shapes (``create``, ``update``), how a client authenticates, and its
routes; RestSandbox (server.py) does the rest: faults, rate limit, admin routes.
A route gets a Req and answers (status, JSON, headers).
"""
from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlencode

from devtools.sandbox.rest.store import Change, Rec, RestStore
from devtools.sandbox.search import BadRequest
from devtools.synthetic import SyntheticCounts, generate

Answer = tuple[int, Any, dict[str, str]]
COUNTIES = ("Nairobi", "Mombasa", "Kisumu", "Nakuru", "Kiambu", "Machakos", "Kakamega", "Nyeri", "Meru", "Kilifi")
FACILITY_TYPES = ("Dispensary", "Health Centre", "Medical Clinic", "Sub-County Hospital", "Nursing Home")
OWNERS = ("Ministry of Health", "Private Practice", "Faith Based Organization", "NGO")
PREMISE_TYPES = ("Retail Pharmacy", "Wholesale", "Hospital Pharmacy", "Manufacturer")
WORDS = ("Afya", "Mji", "Baraka", "Neema", "Tumaini", "Upendo", "Jamii", "Kilele", "Amani", "Riziki")


@dataclass
class Req:
    method: str
    parts: list[str]  # the path's segments
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    base: str  # http://127.0.0.1:P

    def one(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self.one(name)
        try:
            value = default if text is None else int(text)
        except ValueError:
            raise BadRequest(f"{name} must be an integer") from None
        if not low <= value <= high:
            raise BadRequest(f"{name} must be between {low} and {high}")
        return value


def _basic(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def _since(text: str | None, fmt: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.strptime(text, fmt) if fmt != "iso" else datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"not a time in the expected format: {text[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Api:
    """What every API shares: its store, credentials, and the hooks the server calls."""

    store: RestStore
    client_id: str
    client_secret: str
    seed: int = 1
    rng: random.Random = field(init=False)
    name: ClassVar[str] = ""
    entities: ClassVar[tuple[str, ...]] = ()
    default_rate_limit: ClassVar[int] = 600
    webhook_header: ClassVar[str | None] = None  # APIs that send webhooks: the hex HMAC's header

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def token_route(self, req: Req, tokens: Any) -> Answer | None:
        """The token endpoint's answer when ``req`` is for it (OAuth APIs), else None."""
        return None

    def authenticate(self, req: Req, tokens: Any) -> Answer | None:
        """None when the request may proceed; else the refusal to send."""
        raise NotImplementedError

    def route(self, req: Req) -> Answer:
        raise NotImplementedError

    def create(self, entity: str, n: int, at: datetime) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def update(self, entity: str, record: dict[str, Any], at: datetime) -> dict[str, Any]:
        raise NotImplementedError

    def last_updated(self, entity: str, rec: Rec) -> str | None:
        """The time the snapshot reports: what the API itself says, or None if it says nothing."""
        return _iso(rec.updated)

    def belongs(self, record: dict[str, Any], variables: dict[str, str]) -> bool:
        """Whether a tenant with these variables lists ``record`` (PEMS: its organization's only)."""
        return True

    def event(self, change: Change) -> dict[str, Any]:
        """The webhook body for a change (APIs with a ``webhook_header``)."""
        raise NotImplementedError


# -- HIE facility registry -----------------------------------------------------------------------
class HieFacilities(Api):
    name = "hie-facilities"
    entities = ("facilities",)
    webhook_header = "x-hie-signature"
    TIME = "%Y-%m-%d %H:%M:%S"

    def populate(self, records: int, anchor: datetime) -> None:
        for n in range(records):
            at = anchor - timedelta(seconds=self.rng.randrange(1, 200 * 86400))
            rid, record = self.create("facilities", n, at)
            self.store.add("facilities", rid, record, at)

    def create(self, entity: str, n: int, at: datetime) -> tuple[str, dict[str, Any]]:
        rid = f"fac-{100_000 + n}"
        kind = self.rng.choice(FACILITY_TYPES)
        return rid, {"id": rid, "facilityCode": str(10_000 + n), "name": f"{self.rng.choice(WORDS)} {kind}",
                     "county": self.rng.choice(COUNTIES), "subCounty": f"{self.rng.choice(WORDS)} Sub-County",
                     "facilityType": kind, "owner": self.rng.choice(OWNERS),
                     "kephLevel": self.rng.randrange(2, 7), "operationalStatus": "Operational",
                     "latitude": round(self.rng.uniform(-4.5, 4.5), 6), "longitude": round(self.rng.uniform(34, 41.5), 6),
                     "lastUpdated": at.strftime(self.TIME)}

    def update(self, entity: str, record: dict[str, Any], at: datetime) -> dict[str, Any]:
        status = self.rng.choice(("Operational", "Non-Operational", "Operational"))
        return {**record, "operationalStatus": status, "kephLevel": self.rng.randrange(2, 7),
                "lastUpdated": at.strftime(self.TIME)}

    def last_updated(self, entity: str, rec: Rec) -> str | None:
        return _iso(datetime.strptime(rec.record["lastUpdated"], self.TIME).replace(tzinfo=UTC))

    def token_route(self, req: Req, tokens: Any) -> Answer | None:
        if req.parts != ["oauth2", "token"]:
            return None
        if req.method != "POST" or req.one("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, {}
        if _basic(req.headers) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}, {}
        return 200, {"access_token": tokens.issue(), "token_type": "Bearer", "expires_in": 3600}, {}

    def authenticate(self, req: Req, tokens: Any) -> Answer | None:
        header = req.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and tokens.check(header[7:]) == "ok":
            return None
        return 401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'}

    def route(self, req: Req) -> Answer:
        if req.method != "GET" or req.parts != ["hie", "api", "v1", "fr", "facility", "sync"]:
            return 404, {"error": "not found"}, {}
        since = _since(req.one("lastUpdated"), self.TIME)
        records = sorted((r for r in self.store.live("facilities")
                          if since is None or datetime.strptime(r.record["lastUpdated"], self.TIME).replace(tzinfo=UTC) >= since),
                         key=lambda r: (r.updated, r.id))
        body = [r.record for r in records]
        # The registry answers a full listing as a bare list and a filtered one as an object.
        return 200, (body if since is None else {"facilities": body}), {}

    def event(self, change: Change) -> dict[str, Any]:
        return {"eventId": f"hie-{change.id}-{int(change.at.timestamp() * 1e6)}", "action": change.action,
                "timestamp": _iso(change.at), "data": change.record}


# -- PPB premise catalogue --------------------------------------------------------------------------
class PpbPremises(Api):
    name = "ppb-premises"
    entities = ("premises",)
    webhook_header = "x-ppb-signature"
    # The change filter PPB will add (?updatedSince=ISO): "refused" (400, as an API that checks
    # its parameters answers one it does not know), "ignored" (the whole catalogue), "supported"
    # (premises changed since then).
    updated_since = "refused"

    def populate(self, records: int, anchor: datetime) -> None:
        for n in range(records):
            rid, record = self.create("premises", n, anchor)
            self.store.add("premises", rid, record, anchor - timedelta(days=1))

    def create(self, entity: str, n: int, at: datetime) -> tuple[str, dict[str, Any]]:
        premise = 4000 + n
        return str(premise), {"premiseid": premise, "premisename": f"{self.rng.choice(WORDS)} Pharmacy {n}",
                              "licenseno": f"PPB/P/{premise}", "premisetype": self.rng.choice(PREMISE_TYPES),
                              "county": self.rng.choice(COUNTIES), "subcounty": f"{self.rng.choice(WORDS)} Sub-County",
                              "ownership": self.rng.choice(("Sole Proprietor", "Partnership", "Company")),
                              "licensestatus": "Active", "licenseexpiry": f"{2026 + self.rng.randrange(0, 3)}-12-31"}

    def update(self, entity: str, record: dict[str, Any], at: datetime) -> dict[str, Any]:
        return {**record, "licensestatus": self.rng.choice(("Active", "Suspended", "Expired")),
                "licenseexpiry": f"{2027 + self.rng.randrange(0, 3)}-12-31"}

    def last_updated(self, entity: str, rec: Rec) -> str | None:
        return None  # the catalogue says nothing of when a premise changed

    def authenticate(self, req: Req, tokens: Any) -> Answer | None:
        body = req.body if isinstance(req.body, dict) else {}
        if (body.get("useremail"), body.get("userpassword")) == (self.client_id, self.client_secret):
            return None
        return 401, {"error": "Unauthorized", "message": "invalid useremail or userpassword"}, {}

    def route(self, req: Req) -> Answer:
        if req.parts != ["catalogue-0.0.1", "view", "premisecatalogue"]:
            return 404, {"error": "Not Found"}, {}
        if req.method != "POST":
            return 405, {"error": "Method Not Allowed"}, {}
        size = req.integer("size", 20, 1, 5000)
        page = req.integer("page", 0, 0, 10**6)
        since = req.one("updatedSince")
        if since is not None and self.updated_since == "refused":
            return 400, {"error": "Bad Request", "message": "unknown parameter: updatedSince"}, {}
        cutoff = _since(since, "iso") if since is not None and self.updated_since == "supported" else None
        records = sorted((r for r in self.store.live("premises") if cutoff is None or r.updated >= cutoff),
                         key=lambda r: int(r.id))
        chunk = records[page * size:(page + 1) * size]
        pages = (len(records) + size - 1) // size
        return 200, {"_embedded": {"vwApiCurrentPremiseList": [r.record for r in chunk]},
                     "page": {"size": size, "totalElements": len(records), "totalPages": pages, "number": page}}, {}

    def event(self, change: Change) -> dict[str, Any]:
        return {"action": change.action, "timestamp": _iso(change.at),
                "webhookId": f"ppb-{change.id}-{int(change.at.timestamp() * 1e6)}", "data": change.record}


# -- Cliniko ------------------------------------------------------------------------------------------
CLINIKO_ENTITIES = ("practitioners", "patients", "appointments", "invoices")


class Cliniko(Api):
    """Cliniko's v1 API for the same synthetic practice the FHIR sandbox serves (same counts and
    seed): practitioners, patients, appointments, invoices."""

    name = "cliniko"
    entities = CLINIKO_ENTITIES
    default_rate_limit = 200

    def populate(self, counts: SyntheticCounts, anchor: datetime) -> None:
        for entity, rid, record, at in _cliniko_practice(counts, self.seed, anchor, self.base_link):
            self.store.add(entity, rid, record, at)

    base_link = "https://api.au1.cliniko.com/v1"

    def create(self, entity: str, n: int, at: datetime) -> tuple[str, dict[str, Any]]:
        rid = _cliniko_id(entity, n)
        record: dict[str, Any] = {"id": rid if entity in ("appointments", "invoices") else int(rid),
                                  "created_at": _iso(at), "updated_at": _iso(at)}
        practitioner = self._link("practitioners", _cliniko_id("practitioners", 0))
        patient = self._link("patients", _cliniko_id("patients", 0))
        if entity == "practitioners":
            record.update(first_name="New", last_name=f"Practitioner{n}", display_name=f"Dr New Practitioner{n}",
                          email=f"new{n}@clinic.example", active=True)
        elif entity == "patients":
            record.update(first_name="New", last_name=f"Client{n}", date_of_birth="1990-01-01", sex="Female",
                          email=f"client{n}@mail.example", patient_phone_numbers=[{"number": "0400000000"}],
                          archived_at=None)
        elif entity == "appointments":
            start = at.replace(microsecond=0) + timedelta(days=1)
            record.update(starts_at=_iso(start), ends_at=_iso(start + timedelta(minutes=50)), cancelled_at=None,
                          did_not_arrive=False, patient_arrived=False, appointment_type_name="Review session",
                          practitioner=practitioner, patient=patient)
        else:
            record.update(issue_date=at.date().isoformat(), status_description="Open", net_amount="180.00",
                          total_amount="180.00", outstanding_amount="180.00", currency="AUD",
                          practitioner=practitioner, patient=patient)
        return rid, record

    def _link(self, entity: str, rid: str) -> dict[str, Any]:
        return {"links": {"self": f"{self.base_link}/{entity}/{rid}"}}

    def update(self, entity: str, record: dict[str, Any], at: datetime) -> dict[str, Any]:
        changed = {**record, "updated_at": _iso(at)}
        if entity == "appointments":
            changed["cancelled_at"] = _iso(at) if self.rng.random() < 0.3 else None
        elif entity == "invoices":
            changed.update(status_description="Paid", outstanding_amount="0.00")
        elif entity == "patients":
            changed["email"] = f"moved{self.rng.randrange(10**6)}@mail.example"
        else:
            changed["active"] = not record.get("active", True)
        return changed

    def authenticate(self, req: Req, tokens: Any) -> Answer | None:
        if _basic(req.headers) == (self.client_id, ""):
            return None
        return 401, {"message": "You must be logged in to access this resource."}, {}

    def route(self, req: Req) -> Answer:
        parts = req.parts
        if parts[:1] != ["v1"] or len(parts) not in (2, 3) or parts[1] not in CLINIKO_ENTITIES:
            return 404, {"message": "not found"}, {}
        entity = parts[1]
        if req.method != "GET":
            return 405, {"message": "method not allowed"}, {}
        if len(parts) == 3:
            rec = self.store.read(entity, parts[2])
            return (200, rec.record, {}) if rec else (404, {"message": "not found"}, {})
        per_page = req.integer("per_page", 50, 1, 100)
        page = req.integer("page", 1, 1, 10**6)
        low, high = None, None
        for condition in req.query.get("q[]", []):
            name, _, rest = condition.partition(":")
            if name != "updated_at":
                raise BadRequest(f"unsupported filter {name[:40]!r}")
            if rest.startswith(">="):
                low = _since(rest[2:], "iso")
            elif rest.startswith("<"):
                high = _since(rest[1:], "iso")
            else:
                raise BadRequest("updated_at filters: >= or <")
        records = sorted((r for r in self.store.live(entity)
                          if (low is None or r.updated >= low) and (high is None or r.updated < high)),
                         key=lambda r: (r.updated, r.id))
        chunk = records[(page - 1) * per_page:page * per_page]
        query = {k: v for k, v in req.query.items() if k != "page"}
        links = {"self": f"{req.base}/v1/{entity}?{urlencode({**query, 'page': page}, doseq=True)}"}
        if page * per_page < len(records):
            links["next"] = f"{req.base}/v1/{entity}?{urlencode({**query, 'page': page + 1}, doseq=True)}"
        return 200, {entity: [r.record for r in chunk], "total_entries": len(records), "links": links}, {}


def _cliniko_id(entity: str, n: int) -> str:
    # Large integers, past what a double holds exactly: ids must stay text end to end.
    return str({"practitioners": 91_000_000_000_000_000, "patients": 92_000_000_000_000_000,
                "appointments": 93_000_000_000_000_000, "invoices": 94_000_000_000_000_000}[entity] + n)


def _cliniko_practice(counts: SyntheticCounts, seed: int, anchor: datetime,
                      base: str) -> Iterator[tuple[str, str, dict[str, Any], datetime]]:
    """The FHIR sandbox's synthetic practice, in Cliniko's shapes."""
    def link(entity: str, n: int) -> dict[str, Any]:
        return {"links": {"self": f"{base}/{entity}/{_cliniko_id(entity, n)}"}}

    for resource in generate(counts, seed=seed, anchor=anchor):
        kind, updated = resource["resourceType"], resource["meta"]["lastUpdated"]
        at = datetime.fromisoformat(updated.replace("Z", "+00:00"))
        stamp = {"created_at": updated, "updated_at": updated}
        if kind == "Practitioner":
            n = int(resource["id"][3:]) - 1_000_000
            name = resource["name"][0]
            email = next(t["value"] for t in resource["telecom"] if t["system"] == "email")
            yield "practitioners", _cliniko_id("practitioners", n), {
                "id": int(_cliniko_id("practitioners", n)), "first_name": name["given"][0], "last_name": name["family"],
                "display_name": f"Dr {name['given'][0]} {name['family']}", "email": email, "active": True, **stamp}, at
        elif kind == "Patient":
            n = int(resource["id"][3:]) - 2_000_000
            name = next(x for x in resource["name"] if x.get("use") == "official")
            phone = next(t["value"] for t in resource["telecom"] if t["system"] == "phone")
            email = next(t["value"] for t in resource["telecom"] if t["system"] == "email")
            yield "patients", _cliniko_id("patients", n), {
                "id": int(_cliniko_id("patients", n)), "first_name": name["given"][0], "last_name": name["family"],
                "date_of_birth": resource["birthDate"], "sex": resource["gender"].capitalize(), "email": email,
                "patient_phone_numbers": [{"number": phone, "phone_type": "Mobile"}], "archived_at": None, **stamp}, at
        elif kind == "Appointment":
            n = int(resource["id"][3:]) - 3_000_000
            patient = int(resource["participant"][0]["actor"]["reference"].rsplit("-", 1)[1]) - 2_000_000
            role = int(resource["participant"][1]["actor"]["reference"].rsplit("-", 1)[1]) - 1_500_000
            attendance = resource["participant"][0]["extension"][0]["valueCode"]
            yield "appointments", _cliniko_id("appointments", n), {
                "id": _cliniko_id("appointments", n), "starts_at": resource["start"], "ends_at": resource["end"],
                "cancelled_at": updated if attendance == "cancelled" else None,
                "did_not_arrive": attendance == "did-not-attend", "patient_arrived": attendance == "attended",
                "appointment_type_name": resource["serviceType"][0]["text"],
                "practitioner": link("practitioners", role), "patient": link("patients", patient), **stamp}, at
        elif kind == "Invoice":
            n = int(resource["id"][3:]) - 4_000_000
            patient = int(resource["recipient"][0]["reference"].rsplit("-", 1)[1]) - 2_000_000
            role = int(resource["practitioner"][0]["reference"].rsplit("-", 1)[1]) - 1_500_000
            gross, balance = Decimal(str(resource["totalGross"]["value"])), Decimal(str(resource["totalBalance"]["value"]))
            status = {"active": "Paid" if balance == 0 else "Open", "issued": "Open",
                      "write-off": "Written off"}[resource["status"]]
            yield "invoices", _cliniko_id("invoices", n), {
                "id": _cliniko_id("invoices", n), "issue_date": resource["date"], "status_description": status,
                "net_amount": f"{gross:.2f}", "total_amount": f"{gross:.2f}", "outstanding_amount": f"{balance:.2f}",
                "currency": "AUD", "practitioner": link("practitioners", role), "patient": link("patients", patient),
                **stamp}, at


# -- PEMS -------------------------------------------------------------------------------------------------
class Pems(Api):
    name = "pems"
    entities = ("pfa_records",)
    organizations: tuple[str, ...] = ("org-1",)  # records are spread over these in turn

    def populate(self, records: int, anchor: datetime) -> None:
        for n in range(records):
            at = anchor - timedelta(seconds=self.rng.randrange(1, 365 * 86400))
            rid, record = self.create("pfa_records", n, at)
            self.store.add("pfa_records", rid, record, at)

    def create(self, entity: str, n: int, at: datetime) -> tuple[str, dict[str, Any]]:
        rid = f"pfa-{n:07d}"
        return rid, {"id": rid, "organizationId": self.organizations[n % len(self.organizations)],
                     "reference": f"PFA/{2026}/{n:06d}", "category": self.rng.choice(("Inspection", "Permit", "Audit")),
                     "status": "Open", "amount": f"{self.rng.randrange(100, 100_000)}.{self.rng.randrange(100):02d}",
                     "recordedOn": (at - timedelta(days=self.rng.randrange(0, 30))).date().isoformat(),
                     "closed": False, "updatedAt": _iso(at)}

    def update(self, entity: str, record: dict[str, Any], at: datetime) -> dict[str, Any]:
        return {**record, "status": self.rng.choice(("Open", "Review", "Closed")), "closed": self.rng.random() < 0.3,
                "updatedAt": _iso(at)}

    def belongs(self, record: dict[str, Any], variables: dict[str, str]) -> bool:
        return record["organizationId"] == variables.get("organization")

    def authenticate(self, req: Req, tokens: Any) -> Answer | None:
        if req.headers.get("authorization") == f"Bearer {self.client_id}":
            return None
        return 401, {"error": "invalid api key"}, {}

    def route(self, req: Req) -> Answer:
        parts = req.parts
        if parts[:3] != ["api", "v1", "organizations"] or len(parts) not in (5, 6) or parts[4] != "pfa-records":
            return 404, {"error": "not found"}, {}
        organization = parts[3]
        if len(parts) == 6:
            rec = self.store.read("pfa_records", parts[5])
            if rec is None or rec.record["organizationId"] != organization:
                return 404, {"error": "not found"}, {}
            return 200, {"data": rec.record}, {}
        size = req.integer("pageSize", 1000, 1, 10_000)
        since = _since(req.one("updatedSince"), "iso")
        after = _cursor(req.one("cursor"))
        records = sorted((r for r in self.store.live("pfa_records")
                          if r.record["organizationId"] == organization and (since is None or r.updated >= since)
                          and (after is None or (r.updated, r.id) > after)),
                         key=lambda r: (r.updated, r.id))
        chunk = records[:size]
        more = len(records) > size
        cursor = _encode_cursor(chunk[-1].updated, chunk[-1].id) if more and chunk else None
        return 200, {"data": [r.record for r in chunk], "meta": {"nextCursor": cursor, "pageSize": size}}, {}


def _encode_cursor(at: datetime, rid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([_iso(at), rid]).encode()).decode()


def _cursor(text: str | None) -> tuple[datetime, str] | None:
    """Keyset paging: the cursor is the last (change time, id) sent, so changes never shift a page."""
    if not text:
        return None
    try:
        at, rid = json.loads(base64.urlsafe_b64decode(text.encode()))
        return datetime.fromisoformat(at.replace("Z", "+00:00")), str(rid)
    except (ValueError, TypeError):
        raise BadRequest("cursor is not one this API gave") from None


APIS: dict[str, type[Api]] = {a.name: a for a in (HieFacilities, PpbPremises, Cliniko, Pems)}
# Records each API starts with unless told (HIE's ~8,000 facilities, PPB's 10k+ premises, PEMS's
# two pages of 10,000); Cliniko's practice takes the FHIR sandbox's counts.
DEFAULT_RECORDS = {"hie-facilities": 8000, "ppb-premises": 10_000, "pems": 20_000}


def build_api(name: str, *, seed: int = 1, records: int | None = None, counts: SyntheticCounts | None = None,
              anchor: datetime | None = None, client_id: str = "sandbox-client",
              client_secret: str = "sandbox-secret", organizations: int = 1) -> Api:
    """An API with its data generated (same seed, same data). PEMS spreads its records over
    ``organizations`` (org-1, org-2, …); a tenant mirrors one of them."""
    anchor = anchor or datetime.now(UTC).replace(microsecond=0)
    api = APIS[name](RestStore(seed=seed), client_id, client_secret, seed)
    if isinstance(api, Pems):
        api.organizations = tuple(f"org-{n + 1}" for n in range(max(organizations, 1)))
    if isinstance(api, Cliniko):
        api.populate(counts or SyntheticCounts(), anchor)
    else:
        api.populate(DEFAULT_RECORDS[name] if records is None else records, anchor)  # type: ignore[attr-defined]
    return api
