"""`gridloop simulate`: realistic rider traffic over the demo places, and staff working the queues.

Riders: a category mix that fits each kind of place, hot places that draw duplicates (and so common
issues), a pool of riders with their own cookies, an occasional "danger now", and a few bad inputs
(a mistyped code, an unknown category, an over-long text) so the rejection metrics move too.
Staff: every station signs for new cases, dispatches them and resolves them after a while, and
thanks the riders of some resolved cases (致谢, once per case).
"""

from __future__ import annotations

import asyncio
import io
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from gridloop.demo import DEMO_PASSWORD, DEMO_PLACES
from schemas import codes
from schemas.reference import Place, load_places

# (category, weight): what riders actually run into on their rounds
CATEGORY_MIX: tuple[tuple[str, int], ...] = (
    ("ebike_flying_wire", 14),
    ("fire_lane_blocked", 12),
    ("shared_bikes", 14),
    ("sanitation", 14),
    ("manhole_cover", 8),
    ("facility_damage", 10),
    ("safety_hazard", 8),
    ("road_incident", 5),
    ("estate_access", 6),
    ("gas_hazard", 2),
    ("code_damaged", 2),
    ("other", 5),
)
DESCRIPTIONS = {
    "ebike_flying_wire": "楼道里电瓶车飞线充电，插线板挂在窗外",
    "fire_lane_blocked": "消防通道被私家车和三轮车堵住了",
    "shared_bikes": "共享单车堆在路口，人行道走不过去",
    "sanitation": "垃圾桶满溢，地上有积水和垃圾",
    "manhole_cover": "井盖缺了一角，晚上电动车容易摔",
    "facility_damage": "路边护栏倒了，靠近非机动车道",
    "safety_hazard": "广告牌松动，风大的时候晃得厉害",
    "road_incident": "路口两辆电动车相撞，有人倒地",
    "estate_access": "小区门禁不让外卖进，骑手只能在门口等",
    "gas_hazard": "楼下闻到很浓的煤气味",
    "code_damaged": "报告码被撕掉了一半",
    "other": "路灯不亮，整条路很黑",
}
PLATFORMS = ("饿了么", "美团", "顺丰", "京东", "达达", "滴滴")


@dataclass
class Tally:
    """What the simulation did, for its closing summary."""

    sent: Counter[str] = field(default_factory=Counter)
    staff: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    thanked: set[str] = field(default_factory=set)
    """Cases whose riders staff thanked (致谢 is once per case)."""


def tiny_jpeg(seed: int) -> bytes:
    """A small real JPEG (an after-photo for resolves)."""
    from PIL import Image

    img = Image.new("RGB", (64, 48), ((seed * 37) % 255, (seed * 91) % 255, 120))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=70)
    return out.getvalue()


class Riders:
    """Generates rider reports over the demo places."""

    def __init__(self, places: list[Place], rng: random.Random, riders: int = 200) -> None:
        self.places = places
        self.rng = rng
        # a few hot places draw most duplicates: a broken cover on a busy road gets reported a lot
        self.hot = rng.sample(places, k=min(4, len(places)))
        self.hot_category = {
            p.place_id: rng.choice(("manhole_cover", "fire_lane_blocked", "ebike_flying_wire"))
            for p in self.hot
        }
        self.tokens = [uuid.uuid4().hex for _ in range(riders)]

    def next(self) -> tuple[dict[str, Any], str, str]:
        """(body, rider token, kind): kind is ok, hot, or a bad-input reason."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            place = rng.choice(self.hot)
            category, kind = self.hot_category[place.place_id], "hot"
        else:
            place = rng.choice(self.places)
            category = rng.choices([c for c, _ in CATEGORY_MIX], [w for _, w in CATEGORY_MIX])[0]
            kind = "ok"
        body: dict[str, Any] = {
            "code": place.code,
            "category": category,
            "description": DESCRIPTIONS.get(category, ""),
            "danger_now": category in ("road_incident", "gas_hazard") or rng.random() < 0.05,
        }
        if rng.random() < 0.5:
            body["platform"] = rng.choice(PLATFORMS)
        bad = rng.random()
        if bad < 0.01:
            body["code"] = place.code[:-1] + next(c for c in codes.ALPHABET if c != place.code[-1])
            kind = "mistyped_code"
        elif bad < 0.02:
            body["category"], kind = "ufo_sighting", "unknown_category"
        elif bad < 0.025:
            body["description"], kind = "长" * 501, "too_long"
        return body, rng.choice(self.tokens), kind


async def ride(
    client: httpx.AsyncClient, reporter: str, riders: Riders, rate: float, duration: float, tally: Tally
) -> None:
    """Send reports at `rate` per second for `duration` seconds."""
    interval = 1.0 / rate
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    n = 0

    async def one(body: dict[str, Any], token: str, kind: str) -> None:
        t0 = time.monotonic()
        try:
            r = await client.post(
                f"{reporter}/api/v1/reports",
                json=body,
                cookies={"gl_rider": token},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            tally.sent[f"{kind}:{r.status_code}"] += 1
            if r.status_code == 202:
                tally.latencies.append(time.monotonic() - t0)
        except httpx.HTTPError as exc:
            tally.sent[f"{kind}:error:{type(exc).__name__}"] += 1

    while (elapsed := time.monotonic() - start) < duration:
        body, token, kind = riders.next()
        task = asyncio.create_task(one(body, token, kind))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        await asyncio.sleep(max(0.0, n * interval - elapsed))
    if pending:
        await asyncio.wait(pending, timeout=30)


STAFF_STEPS = (("new", "acknowledge"), ("acknowledged", "dispatch"), ("dispatched", "resolve"))


THANKS_SHARE = 0.3
"""The share of resolved cases whose riders staff thank (issue 17), once each."""


async def thank_riders(
    client: httpx.AsyncClient,
    closer: str,
    auth: dict[str, str],
    case_id: str,
    rng: random.Random,
    tally: Tally,
) -> None:
    """Thank a resolved case's riders (致谢) with a preset message."""
    preset = rng.choice(("reported", "safety", "details"))
    resp = await client.post(f"{closer}/api/v1/cases/{case_id}/thanks", json={"preset": preset}, headers=auth)
    tally.thanked.add(case_id)
    tally.staff[f"thanks:{resp.status_code}"] += 1


async def staff_round(
    client: httpx.AsyncClient, closer: str, station: str, token: str, rng: random.Random, tally: Tally
) -> None:
    """One pass over a station's queue: sign for, dispatch, resolve (each with some probability)."""
    auth = {"Authorization": f"Bearer {token}"}
    r = await client.get(f"{closer}/api/v1/queue", params={"station": station, "limit": 100}, headers=auth)
    if r.status_code != 200:
        tally.staff[f"queue:{r.status_code}"] += 1
        return
    for case in r.json()["items"]:
        step = dict(STAFF_STEPS).get(case["status"])
        if step is None or rng.random() > 0.5:
            continue
        payload: dict[str, Any] = {"action": step, "version": case["version"]}
        files = None
        if step == "dispatch":
            payload["assignee"] = rng.choice(["老王", "小李", "张师傅", "陈阿姨"])
        if step == "resolve":
            payload["note"] = "已现场处置，恢复正常"
            files = {"photo": ("after.jpg", tiny_jpeg(rng.randrange(1000)), "image/jpeg")}
        url = f"{closer}/api/v1/cases/{case['case_id']}/transitions"
        if files:
            resp = await client.post(
                url, data={k: str(v) for k, v in payload.items()}, files=files, headers=auth
            )
        else:
            resp = await client.post(url, json=payload, headers=auth)
        tally.staff[f"{step}:{resp.status_code}"] += 1
        fixed = step == "resolve" and resp.status_code == 200 and case["case_id"] not in tally.thanked
        if fixed and rng.random() < THANKS_SHARE:
            await thank_riders(client, closer, auth, case["case_id"], rng, tally)


async def work_queues(
    client: httpx.AsyncClient,
    closer: str,
    stations: list[str],
    duration: float,
    every: float,
    rng: random.Random,
    tally: Tally,
) -> None:
    """Staff of every station work their queue every `every` seconds."""
    tokens: dict[str, str] = {}
    start = time.monotonic()
    while time.monotonic() - start < duration:
        for station in stations:
            try:
                if station not in tokens:
                    r = await client.post(
                        f"{closer}/api/v1/auth/token", data={"username": station, "password": DEMO_PASSWORD}
                    )
                    if r.status_code != 200:
                        tally.staff[f"login:{r.status_code}"] += 1
                        continue
                    tokens[station] = r.json()["access_token"]
                await staff_round(client, closer, station, tokens[station], rng, tally)
            except httpx.HTTPError as exc:
                tally.staff[f"error:{type(exc).__name__}"] += 1
        await asyncio.sleep(every)


async def simulate(
    reporter: str,
    closer: str,
    rate: float,
    duration: float,
    staff_every: float = 5.0,
    seed: int | None = None,
    staff: bool = True,
) -> Tally:
    """Run riders (and staff) against a running stack; returns what was sent and answered."""
    rng = random.Random(seed)
    places = load_places(DEMO_PLACES)
    riders = Riders(places, rng)
    stations = sorted({f"yh-s{i}" for i in range(1, 6)})
    tally = Tally()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=15, limits=limits) as client:
        jobs = [ride(client, reporter, riders, rate, duration, tally)]
        if staff:
            jobs.append(work_queues(client, closer, stations, duration, staff_every, rng, tally))
        await asyncio.gather(*jobs)
    return tally


def summary(tally: Tally, duration: float) -> str:
    """A short human summary."""
    accepted = sum(v for k, v in tally.sent.items() if k.endswith(":202"))
    lat = sorted(tally.latencies)
    p = (lambda q: lat[min(int(q * len(lat)), len(lat) - 1)] * 1000) if lat else (lambda q: 0.0)
    lines = [
        f"{accepted} reports accepted in {duration:.0f}s ({accepted / max(duration, 1e-9):.1f}/s); "
        f"POST p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms"
    ]
    lines += [f"  riders  {k:32} {v}" for k, v in sorted(tally.sent.items())]
    lines += [f"  staff   {k:32} {v}" for k, v in sorted(tally.staff.items())]
    return "\n".join(lines)
