"""Reference data: streets, grids, stations, categories and routing rules, loaded from data files.

Layout under the jurisdiction root (``data/jurisdictions`` by default)::

    categories.json            shared by every street: a JSON list of categories
    <street>/street.json       {id, name_zh, name_en, centre_station_id, order?, district_*?,
                               working_hours?}
    <street>/grids.geojson     a FeatureCollection of Polygons; properties grid_id, name_zh,
                               name_en, station_id
    <street>/stations.json     a JSON list of stations
    <street>/rules.json        a JSON list of routing rules (optional file; may be empty)

Coordinates are WGS84 (EPSG:4326) longitude/latitude in degrees, the frame browsers' Geolocation
API reports; Chinese map tiles (GCJ-02) need a conversion for display. Grid polygon rings are
``(lon, lat)`` as in GeoJSON; places and lookups take ``lat, lon`` like the HTTP API.

Everything is validated at start-up; any problem is a ``ReferenceError`` whose message names the
file and the entry. Streets, grids, stations and rules in a street folder get their ``street_id``
from the folder's ``street.json``. Streets are ordered by ``(order, id)``; the first one is the
default street (the demo street, 殷行街道).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import time
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import shapely
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from shapely.geometry import Point, Polygon
from shapely.validation import explain_validity

from schemas import codes
from schemas.cases import PRIORITIES, ClockMode, Priority

StationKind = Literal["grid_station", "centre", "specialised"]

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 -]{2,23}$")]
NotifyUrl = Annotated[
    str,
    StringConstraints(pattern=r"^([a-z][a-z0-9+.-]{1,20}://\S+|env:[A-Z_][A-Z0-9_]{0,63})$", max_length=500),
]

OVERLAP_EPSILON_DEG2 = 1e-10
"""Grids may share borders; an intersection larger than this (about 1 m²) is an overlap."""

CATEGORIES_FILE = "categories.json"
STREET_FILE = "street.json"
GRIDS_FILE = "grids.geojson"
STATIONS_FILE = "stations.json"
RULES_FILE = "rules.json"
DEFAULT_WORKING_HOURS = "09:00-12:00,13:00-18:00"


class ReferenceError(ValueError):  # the contract name; it shadows the weakref builtin
    """Bad reference data; the message names the file and the entry."""

    def __init__(self, problem: str, *, file: str | Path | None = None, entry: str | None = None) -> None:
        parts = [str(file)] if file is not None else []
        if entry is not None:
            parts.append(entry)
        parts.append(problem)
        super().__init__(": ".join(parts))
        self.file = str(file) if file is not None else None
        self.entry = entry
        self.problem = problem


class _Ref(BaseModel):
    """Base of the reference models: immutable, unknown keys refused (they are usually typos)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_hours(spec: str) -> tuple[tuple[time, time], ...]:
    """Parse working hours like "09:00-12:00,13:00-18:00" into ordered, non-overlapping windows."""
    windows: list[tuple[time, time]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            a, b = (time.fromisoformat(x.strip()) for x in part.split("-"))
        except ValueError as exc:
            raise ValueError(f"working hours {part!r} are not HH:MM-HH:MM") from exc
        if a >= b:
            raise ValueError(f"working hours {part!r} end before they start")
        if windows and a < windows[-1][1]:
            raise ValueError(f"working hours {part!r} overlap or are out of order")
        windows.append((a, b))
    if not windows:
        raise ValueError("working hours are empty")
    return tuple(windows)


def _all_working() -> dict[Priority, ClockMode]:
    return dict.fromkeys(PRIORITIES, "working")


class SlaPolicy(_Ref):
    """Deadlines in hours per priority (to sign for and to resolve), and the clock each one counts on.

    `clock` per priority: `working` (working hours on working days) or `calendar` (around the clock);
    `danger_now_clock` is the clock of a report the rider flagged "danger now", whatever its priority."""

    ack_hours: dict[Priority, Annotated[float, Field(gt=0)]]
    resolve_hours: dict[Priority, Annotated[float, Field(gt=0)]]
    clock: dict[Priority, ClockMode] = Field(default_factory=_all_working)
    danger_now_clock: ClockMode = "working"

    @model_validator(mode="after")
    def _complete_and_consistent(self) -> SlaPolicy:
        """Every priority present; ack before resolve; a higher priority is never slower."""
        for name, table in (("ack_hours", self.ack_hours), ("resolve_hours", self.resolve_hours)):
            missing = [p for p in PRIORITIES if p not in table]
            if missing:
                raise ValueError(f"{name} lacks priorities {missing}")
            if not table["urgent"] <= table["high"] <= table["normal"]:
                raise ValueError(f"{name} must not grow with priority (urgent <= high <= normal)")
        missing_clock = [p for p in PRIORITIES if p not in self.clock]
        if missing_clock:
            raise ValueError(f"clock lacks priorities {missing_clock}")
        for p in PRIORITIES:
            if self.ack_hours[p] > self.resolve_hours[p]:
                raise ValueError(f"ack_hours[{p}] is longer than resolve_hours[{p}]")
        return self

    def ack(self, priority: Priority) -> float:
        """Working hours allowed to sign for a case of this priority."""
        return self.ack_hours[priority]

    def resolve(self, priority: Priority) -> float:
        """Working hours allowed to resolve a case of this priority."""
        return self.resolve_hours[priority]

    def clock_for(self, priority: Priority, danger_now: bool) -> ClockMode:
        """The clock a case of this priority counts on; "danger now" may put it on calendar time."""
        if danger_now and self.danger_now_clock == "calendar":
            return "calendar"
        return self.clock[priority]


class TopicRule(_Ref):
    """When cases of a category suggest an area-level common issue (议题): `min_cases` of them in one
    grid, or within `radius_m` metres of one another, submitted within the last `window_days`."""

    min_cases: int = Field(3, ge=2, le=100, description="N: how many cases make a suggestion.")
    radius_m: float = Field(200.0, gt=0, le=5000, description="R: metres from the cluster's first case.")
    window_days: float = Field(14.0, gt=0, le=365, description="D: how far back cases count, in days.")


class Category(_Ref):
    """A kind of issue a rider can report, with its SLA and duplicate-merging parameters."""

    id: Slug
    name_zh: Text
    name_en: Text
    icon: str
    default_priority: Priority
    sla: SlaPolicy
    dup_radius_m: float = Field(50.0, gt=0, le=2000)
    dup_window_hours: float = Field(gt=0)
    needs_after_photo: bool
    topic: TopicRule = Field(default_factory=TopicRule, description="When its cases suggest a topic (议题).")

    @field_validator("icon")
    @classmethod
    def _one_emoji(cls, value: str) -> str:
        """A single emoji: a short run of code points, no spaces, letters or digits."""
        if not 1 <= len(value) <= 8 or any(c.isspace() or c.isascii() for c in value):
            raise ValueError(f"icon must be a single emoji, not {value!r}")
        return value

    def name(self, lang: str = "zh") -> str:
        """The display name in ``zh`` (default) or ``en``."""
        return self.name_en if lang.startswith("en") else self.name_zh


class Station(_Ref):
    """A grid station (网格站), the street's operations centre (城运中心) or a specialised unit."""

    id: Slug
    name_zh: Text
    name_en: Text
    kind: StationKind
    grid_ids: list[Slug] = Field(default_factory=list)
    street_id: Slug
    phone: Phone | None = None
    notify_url: NotifyUrl | None = Field(
        None,
        description="The station's default notification channel (the notifier's `station`, `centre` and "
        "`duty` channels): an Apprise URL (wecombot://, dingtalk://, mailto://, json://), or "
        "`env:NAME` to read it from an environment variable, so a robot key stays out of the data files.",
    )

    def name(self, lang: str = "zh") -> str:
        """The display name in ``zh`` (default) or ``en``."""
        return self.name_en if lang.startswith("en") else self.name_zh


class Grid(_Ref):
    """A comprehensive grid (综合网格): a polygon served by one grid station."""

    id: Slug
    name_zh: Text
    name_en: Text
    station_id: Slug
    street_id: Slug
    polygon: list[tuple[float, float]]
    """The exterior ring, ``(lon, lat)`` pairs, closed (the first position repeated last)."""

    @field_validator("polygon")
    @classmethod
    def _valid_ring(cls, ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
        """Closed, at least a triangle, in degree ranges, not self-intersecting, non-empty."""
        if len(ring) < 4:
            raise ValueError("a polygon ring needs at least 4 positions (the first repeated last)")
        if ring[0] != ring[-1]:
            raise ValueError("the polygon ring is not closed (first and last positions differ)")
        for lon, lat in ring:
            if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
                raise ValueError(f"position [{lon}, {lat}] is not [lon, lat] in degrees")
        shape = Polygon(ring)
        if not shape.is_valid:
            raise ValueError(f"invalid polygon: {explain_validity(shape)}")
        if shape.area <= 0:
            raise ValueError("the polygon has no area")
        return ring

    @cached_property
    def shape(self) -> Polygon:
        """The polygon as a prepared shapely geometry (built once)."""
        poly = Polygon(self.polygon)
        shapely.prepare(poly)
        return poly

    def covers(self, lat: float, lon: float) -> bool:
        """True when the point lies inside the grid or on its border."""
        return bool(self.shape.covers(Point(lon, lat)))

    def name(self, lang: str = "zh") -> str:
        """The display name in ``zh`` (default) or ``en``."""
        return self.name_en if lang.startswith("en") else self.name_zh


class GridIndex:
    """Point-in-polygon over many grids with a shapely STRtree.

    Border rule: grids may share borders and corners, and a point there is covered by several
    grids. It lands in exactly one, the covering grid whose id sorts first. Ids are stable names,
    unlike file order, so editing a data file never moves a border point to another station.
    """

    def __init__(self, grids: Sequence[Grid]) -> None:
        # sorted by id: the first covering grid in this order is the border rule's winner
        self.grids: tuple[Grid, ...] = tuple(sorted(grids, key=lambda g: g.id))
        self.tree = shapely.STRtree([g.shape for g in self.grids])

    def covering(self, lat: float, lon: float) -> list[Grid]:
        """Every grid containing the point or having it on its border, by id."""
        hits = self.tree.query(Point(lon, lat), predicate="covered_by")
        return [self.grids[i] for i in sorted(int(h) for h in hits)]

    def grid_at(self, lat: float, lon: float) -> Grid | None:
        """The one grid a point belongs to (see the border rule), or None outside every grid."""
        found = self.covering(lat, lon)
        return found[0] if found else None

    def nearest(self, lat: float, lon: float) -> tuple[Grid, float]:
        """The grid nearest the point (ties: the lower id) and its distance in degrees."""
        point = Point(lon, lat)
        return min(((g, float(g.shape.distance(point))) for g in self.grids), key=lambda t: (t[1], t[0].id))


class RoutingRule(_Ref):
    """Send a category to another station, in one grid or (grid_id null) the whole street."""

    id: Slug
    category: Slug
    grid_id: Slug | None = None
    station_id: Slug
    street_id: Slug
    reason_zh: Text
    reason_en: Text


class Street(_Ref):
    """A street (街道) with its operations centre."""

    id: Slug
    name_zh: Text
    name_en: Text
    centre_station_id: Slug
    district_zh: Text | None = None
    district_en: Text | None = None
    order: int = 100
    working_hours: str = Field(
        DEFAULT_WORKING_HOURS, description="Daily working hours on working days, local time (the SLA clock)."
    )

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        """Working hours that can be meant: HH:MM-HH:MM windows, in order, not overlapping."""
        parse_hours(value)
        return value

    def name(self, lang: str = "zh") -> str:
        """The display name in ``zh`` (default) or ``en``."""
        return self.name_en if lang.startswith("en") else self.name_zh


class Place(_Ref):
    """A place with a printed report code (a gate, lamppost, rider station)."""

    place_id: Slug
    name_zh: Text
    name_en: Text
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    grid_id: Slug
    code: str

    @field_validator("code")
    @classmethod
    def _valid_code(cls, value: str) -> str:
        """A well-formed report code with the right check character."""
        if not codes.is_valid(value):
            raise ValueError(f"{value!r} is not a valid report code")
        return value


class Jurisdiction(_Ref):
    """All reference data, loaded and cross-checked, indexed by id."""

    streets: dict[str, Street]
    grids: dict[str, Grid]
    stations: dict[str, Station]
    categories: dict[str, Category]
    rules: list[RoutingRule]
    version: str = ""
    """A digest of the files loaded, to log and compare which data a process runs on."""

    @property
    def default_street_id(self) -> str:
        """The first street (lowest ``order``), the default for lookups without a street."""
        return next(iter(self.streets))

    def centre_for(self, street_id: str | None = None) -> Station:
        """The operations centre of a street (default: the first street)."""
        street = self.streets[street_id or self.default_street_id]
        return self.stations[street.centre_station_id]

    def station(self, station_id: str) -> Station:
        """A station by id (KeyError when unknown)."""
        return self.stations[station_id]

    def grid(self, grid_id: str) -> Grid:
        """A grid by id (KeyError when unknown)."""
        return self.grids[grid_id]

    def category(self, category_id: str) -> Category:
        """A category by id (KeyError when unknown)."""
        return self.categories[category_id]

    def grids_of(self, street_id: str) -> list[Grid]:
        """The grids of one street, in file order."""
        return [g for g in self.grids.values() if g.street_id == street_id]

    def stations_of(self, street_id: str) -> list[Station]:
        """The stations of one street, in file order."""
        return [s for s in self.stations.values() if s.street_id == street_id]

    @cached_property
    def grid_index(self) -> GridIndex:
        """The spatial index over every grid of every street (built once, on first use)."""
        return GridIndex(list(self.grids.values()))

    def grid_at(self, lat: float, lon: float) -> Grid | None:
        """The grid containing the point, or None; on a shared border, the grid whose id sorts first."""
        return self.grid_index.grid_at(lat, lon)

    def nearest_street(self, lat: float, lon: float) -> tuple[Street, float]:
        """The street whose grids lie nearest the point, and that distance in degrees (0 inside)."""
        grid, distance = self.grid_index.nearest(lat, lon)
        return self.streets[grid.street_id], distance

    def rule_for(self, category_id: str, grid_id: str) -> RoutingRule | None:
        """The rule for a category in a grid: a grid rule, else a street-wide one, else None."""
        street_id = self.grids[grid_id].street_id
        street_wide: RoutingRule | None = None
        for rule in self.rules:
            if rule.category != category_id or rule.street_id != street_id:
                continue
            if rule.grid_id == grid_id:
                return rule
            if rule.grid_id is None:
                street_wide = rule
        return street_wide

    def station_for(self, category_id: str, grid_id: str) -> tuple[Station, RoutingRule | None]:
        """The station a case of this category in this grid goes to, and the rule that chose it."""
        rule = self.rule_for(category_id, grid_id)
        if rule is not None:
            return self.stations[rule.station_id], rule
        return self.stations[self.grids[grid_id].station_id], None


# --- loading -------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def _read_json(path: Path, digest: Any) -> Any:
    """Parse a JSON file, feeding its bytes to the version digest."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ReferenceError("file not found", file=path) from None
    digest.update(path.name.encode() + b"\0" + raw + b"\0")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReferenceError(f"not valid JSON ({exc})", file=path) from None


def _entry_name(raw: Any, key: str, index: int) -> str:
    """How an entry is named in messages: its id when it has one, else its position."""
    ident = raw.get(key) if isinstance(raw, dict) else None
    if isinstance(ident, str) and ident:
        return f"entry {ident!r} (#{index})"
    return f"entry #{index}"


def _explain(exc: ValidationError) -> str:
    """A compact one-line account of pydantic's errors: ``field: message; ...``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"]) or "entry"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _build(model: type[M], raw: Any, path: Path, entry: str) -> M:
    """Validate one entry; pydantic's errors become a ReferenceError naming file and entry."""
    if not isinstance(raw, dict):
        problem = f"expected a JSON object, got {type(raw).__name__}"
        raise ReferenceError(problem, file=path, entry=entry)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ReferenceError(_explain(exc), file=path, entry=entry) from None


def _expect_list(data: Any, path: Path) -> list[Any]:
    """The top level of a list file."""
    if not isinstance(data, list):
        raise ReferenceError("expected a JSON list of entries at the top level", file=path)
    return data


def _with_street(raw: Any, street_id: str, path: Path, entry: str) -> Any:
    """Give an entry its street id from the folder, refusing a contradicting one."""
    if not isinstance(raw, dict):
        return raw
    given = raw.get("street_id")
    if given is not None and given != street_id:
        raise ReferenceError(
            f"street_id {given!r} differs from the folder's street {street_id!r}",
            file=path,
            entry=entry,
        )
    return {**raw, "street_id": street_id}


def _load_list(
    model: type[M], path: Path, key: str, digest: Any, street_id: str | None = None
) -> list[tuple[M, str]]:
    """Load a JSON list file into models, each with its entry name for later messages."""
    items = []
    for index, raw in enumerate(_expect_list(_read_json(path, digest), path)):
        entry = _entry_name(raw, key, index)
        if street_id is not None:
            raw = _with_street(raw, street_id, path, entry)
        items.append((_build(model, raw, path, entry), entry))
    return items


def _load_grids(path: Path, street_id: str, digest: Any) -> list[tuple[Grid, str]]:
    """Load a street's grids from a GeoJSON FeatureCollection of Polygons."""
    data = _read_json(path, digest)
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise ReferenceError("expected a GeoJSON FeatureCollection", file=path)
    features = data.get("features")
    if not isinstance(features, list):
        raise ReferenceError("the FeatureCollection has no 'features' list", file=path)
    grids = []
    for index, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        entry = _entry_name(props, "grid_id", index)
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise ReferenceError("expected a GeoJSON Feature", file=path, entry=entry)
        if not isinstance(props, dict):
            raise ReferenceError("the feature has no properties object", file=path, entry=entry)
        geometry = feature.get("geometry")
        if not isinstance(geometry, dict) or geometry.get("type") != "Polygon":
            kind = geometry.get("type") if isinstance(geometry, dict) else geometry
            problem = f"geometry must be a Polygon, not {kind!r}"
            raise ReferenceError(problem, file=path, entry=entry)
        rings = geometry.get("coordinates")
        if not isinstance(rings, list) or not rings:
            raise ReferenceError("the Polygon has no coordinates", file=path, entry=entry)
        if len(rings) > 1:
            raise ReferenceError("polygons with holes are not supported", file=path, entry=entry)
        ring = rings[0]
        if isinstance(ring, list):  # GeoJSON positions may carry an altitude: keep lon, lat
            ring = [p[:2] if isinstance(p, list) else p for p in ring]
        raw = {
            "id": props.get("grid_id"),
            "name_zh": props.get("name_zh"),
            "name_en": props.get("name_en"),
            "station_id": props.get("station_id"),
            "street_id": props.get("street_id"),
            "polygon": ring,
        }
        raw = _with_street(raw, street_id, path, entry)
        grids.append((_build(Grid, raw, path, entry), entry))
    return grids


class _Seen:
    """Ids seen so far of one kind, with where they came from, to report duplicates."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.where: dict[str, Path] = {}

    def add(self, ident: str, path: Path, entry: str) -> None:
        """Record an id, or raise ReferenceError naming both places."""
        if ident in self.where:
            raise ReferenceError(
                f"duplicate {self.kind} {ident!r} (also in {self.where[ident]})",
                file=path,
                entry=entry,
            )
        self.where[ident] = path


def _street_dirs(root: Path) -> list[Path]:
    """The street folders under the root: every directory holding a street.json."""
    if not root.is_dir():
        raise ReferenceError("jurisdiction folder not found", file=root)
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and (p / STREET_FILE).is_file())
    if not dirs:
        raise ReferenceError(f"no street folders (none holds a {STREET_FILE})", file=root)
    return dirs


def _check_overlaps(grids: Sequence[tuple[Grid, str, Path]]) -> None:
    """Refuse two grids whose interiors overlap by more than OVERLAP_EPSILON_DEG2."""
    for (a, _, path_a), (b, entry_b, path_b) in combinations(grids, 2):
        if not a.shape.intersects(b.shape):
            continue
        area = a.shape.intersection(b.shape).area
        if area > OVERLAP_EPSILON_DEG2:
            where = f" (in {path_a})" if path_a != path_b else ""
            raise ReferenceError(
                f"grids {a.id!r} and {b.id!r}{where} overlap ({area:.3g} square degrees)",
                file=path_b,
                entry=entry_b,
            )


def _categories(path: Path, digest: Any) -> dict[str, Category]:
    """Categories by id, duplicates refused."""
    seen = _Seen("category id")
    result: dict[str, Category] = {}
    for category, entry in _load_list(Category, path, "id", digest):
        seen.add(category.id, path, entry)
        result[category.id] = category
    if not result:
        raise ReferenceError("no categories", file=path)
    return result


def load_jurisdiction(root: Path) -> Jurisdiction:
    """Load categories and every street folder under ``root``; ReferenceError on any problem."""
    root = Path(root)
    digest = hashlib.sha256()
    categories = _categories(root / CATEGORIES_FILE, digest)

    streets: list[tuple[Street, Path]] = []
    grids: list[tuple[Grid, str, Path]] = []
    stations: list[tuple[Station, str, Path]] = []
    rules: list[tuple[RoutingRule, str, Path]] = []
    seen = {k: _Seen(f"{k} id") for k in ("street", "grid", "station", "rule")}

    for folder in _street_dirs(root):
        street_path = folder / STREET_FILE
        raw_street = _read_json(street_path, digest)
        street = _build(Street, raw_street, street_path, f"street {folder.name!r}")
        seen["street"].add(street.id, street_path, f"street {street.id!r}")
        streets.append((street, street_path))
    streets.sort(key=lambda item: (item[0].order, item[0].id))

    for street, street_path in streets:
        folder = street_path.parent
        path = folder / STATIONS_FILE
        for station, entry in _load_list(Station, path, "id", digest, street.id):
            seen["station"].add(station.id, path, entry)
            stations.append((station, entry, path))

        path = folder / GRIDS_FILE
        street_grids = _load_grids(path, street.id, digest)
        if not street_grids:
            raise ReferenceError("the street has no grids", file=path)
        for grid, entry in street_grids:
            seen["grid"].add(grid.id, path, entry)
            grids.append((grid, entry, path))

        path = folder / RULES_FILE
        if path.exists():
            for rule, entry in _load_list(RoutingRule, path, "id", digest, street.id):
                seen["rule"].add(rule.id, path, entry)
                rules.append((rule, entry, path))

    _cross_check(streets, grids, stations, rules, categories)
    _check_overlaps(grids)
    return Jurisdiction(
        streets={s.id: s for s, _ in streets},
        grids={g.id: g for g, _, _ in grids},
        stations={s.id: s for s, _, _ in stations},
        categories=categories,
        rules=[r for r, _, _ in rules],
        version=digest.hexdigest()[:16],
    )


def _cross_check(
    streets: Iterable[tuple[Street, Path]],
    grids: Sequence[tuple[Grid, str, Path]],
    stations: Sequence[tuple[Station, str, Path]],
    rules: Iterable[tuple[RoutingRule, str, Path]],
    categories: dict[str, Category],
) -> None:
    """References between entries: every id named must exist, in the same street."""
    grid_by_id = {g.id: g for g, _, _ in grids}
    station_by_id = {s.id: s for s, _, _ in stations}

    def need(kind: str, ident: str, table: dict[str, Any], street_id: str, path: Path, entry: str) -> None:
        """The named grid or station exists and belongs to the same street."""
        found = table.get(ident)
        if found is None:
            raise ReferenceError(f"unknown {kind} {ident!r}", file=path, entry=entry)
        if found.street_id != street_id:
            raise ReferenceError(
                f"{kind} {ident!r} belongs to street {found.street_id!r}, not {street_id!r}",
                file=path,
                entry=entry,
            )

    for street, path in streets:
        entry = f"street {street.id!r}"
        need("station", street.centre_station_id, station_by_id, street.id, path, entry)
        if station_by_id[street.centre_station_id].kind != "centre":
            raise ReferenceError(
                f"centre_station_id {street.centre_station_id!r} is not a station of kind 'centre'",
                file=path,
                entry=entry,
            )

    for grid, entry, path in grids:
        need("station", grid.station_id, station_by_id, grid.street_id, path, entry)
        if grid.id not in station_by_id[grid.station_id].grid_ids:
            raise ReferenceError(
                f"its station {grid.station_id!r} does not list the grid in grid_ids",
                file=path,
                entry=entry,
            )

    for station, entry, path in stations:
        if len(set(station.grid_ids)) != len(station.grid_ids):
            raise ReferenceError("grid_ids lists a grid twice", file=path, entry=entry)
        for grid_id in station.grid_ids:
            need("grid", grid_id, grid_by_id, station.street_id, path, entry)
            owner = grid_by_id[grid_id].station_id
            if station.kind == "grid_station" and owner != station.id:
                raise ReferenceError(
                    f"lists grid {grid_id!r}, whose station is {owner!r}", file=path, entry=entry
                )

    scopes: dict[tuple[str, str, str | None], str] = {}
    for rule, entry, path in rules:
        if rule.category not in categories:
            raise ReferenceError(f"unknown category {rule.category!r}", file=path, entry=entry)
        if rule.grid_id is not None:
            need("grid", rule.grid_id, grid_by_id, rule.street_id, path, entry)
        need("station", rule.station_id, station_by_id, rule.street_id, path, entry)
        scope = (rule.street_id, rule.category, rule.grid_id)
        if scope in scopes:
            raise ReferenceError(
                f"same category and grid as rule {scopes[scope]!r}: ambiguous",
                file=path,
                entry=entry,
            )
        scopes[scope] = rule.id


def load_places(path: Path, jurisdiction: Jurisdiction | None = None) -> list[Place]:
    """Load places; with a jurisdiction, also check each lies in the grid it names."""
    path = Path(path)
    places: list[Place] = []
    seen_ids = _Seen("place id")
    seen_codes = _Seen("code")
    for place, entry in _load_list(Place, path, "place_id", hashlib.sha256()):
        seen_ids.add(place.place_id, path, entry)
        seen_codes.add(place.code, path, entry)
        if jurisdiction is not None:
            grid = jurisdiction.grids.get(place.grid_id)
            if grid is None:
                raise ReferenceError(f"unknown grid {place.grid_id!r}", file=path, entry=entry)
            if not grid.covers(place.lat, place.lon):
                actual = jurisdiction.grid_at(place.lat, place.lon)
                where = f"grid {actual.id!r}" if actual else "no grid"
                raise ReferenceError(
                    f"lies in {where}, not in grid {place.grid_id!r}", file=path, entry=entry
                )
        places.append(place)
    return places


def grid_geojson(j: Jurisdiction, street_id: str | None = None) -> dict[str, Any]:
    """The grids (of one street, or all) as a GeoJSON FeatureCollection for maps."""
    features = []
    for grid in j.grids.values():
        if street_id is not None and grid.street_id != street_id:
            continue
        station = j.stations[grid.station_id]
        features.append(
            {
                "type": "Feature",
                "id": grid.id,
                "properties": {
                    "grid_id": grid.id,
                    "name_zh": grid.name_zh,
                    "name_en": grid.name_en,
                    "station_id": grid.station_id,
                    "station_name_zh": station.name_zh,
                    "station_name_en": station.name_en,
                    "street_id": grid.street_id,
                },
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[lon, lat] for lon, lat in grid.polygon]],
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}
