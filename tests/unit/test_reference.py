"""Reference data: the shipped files load and make sense; every broken copy is refused clearly."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import Point, Polygon, shape
from shapely.ops import unary_union

from schemas import codes
from schemas.reference import (
    PRIORITIES,
    Jurisdiction,
    Place,
    ReferenceError,
    grid_geojson,
    load_jurisdiction,
    load_places,
)

REPO = Path(__file__).resolve().parents[2]
JURISDICTIONS = REPO / "data" / "jurisdictions"
PLACES = REPO / "data" / "demo" / "places.json"

CATEGORY_NAMES = {
    "safety_hazard": "安全隐患",
    "facility_damage": "公共设施损坏",
    "road_incident": "路面突发事件",
    "fire_lane_blocked": "消防通道堵塞",
    "ebike_flying_wire": "电动车飞线充电",
    "manhole_cover": "井盖缺失或破损",
    "shared_bikes": "共享单车堆积",
    "estate_access": "小区进门难",
    "gas_hazard": "燃气隐患",
    "sanitation": "环境卫生",
    "code_damaged": "报告码损坏",
    "other": "其他",
}


@pytest.fixture(scope="module")
def jur() -> Jurisdiction:
    """The shipped jurisdiction."""
    return load_jurisdiction(JURISDICTIONS)


@pytest.fixture(scope="module")
def places(jur: Jurisdiction) -> list[Place]:
    """The shipped demo places, checked against the jurisdiction."""
    return load_places(PLACES, jur)


# --- the shipped data ----------------------------------------------------------------------


def test_streets_and_centres(jur: Jurisdiction) -> None:
    """殷行街道 first (the default), then 彭浦新村街道, each with its operations centre."""
    assert list(jur.streets) == ["yinhang", "pengpu"]
    assert jur.streets["yinhang"].name_zh == "殷行街道"
    assert jur.streets["pengpu"].name_zh == "彭浦新村街道"
    assert jur.default_street_id == "yinhang"
    assert jur.centre_for().id == "yh-centre"
    assert jur.centre_for().name_zh == "殷行街道城运中心"
    assert jur.centre_for("pengpu").id == "pp-centre"
    for street_id in jur.streets:
        assert jur.centre_for(street_id).kind == "centre"
        assert jur.centre_for(street_id).street_id == street_id


def test_grids_and_stations(jur: Jurisdiction) -> None:
    """5 grids in 殷行, 9 in 彭浦新村, each with a grid station that lists it."""
    assert [g.id for g in jur.grids_of("yinhang")] == [f"yh-g{i}" for i in range(1, 6)]
    assert [g.id for g in jur.grids_of("pengpu")] == [f"pp-g{i}" for i in range(1, 10)]
    for grid in jur.grids.values():
        station = jur.station(grid.station_id)
        assert station.kind == "grid_station"
        assert grid.id in station.grid_ids
        assert station.street_id == grid.street_id
    kinds = [s.kind for s in jur.stations_of("yinhang")]
    assert kinds.count("grid_station") == 5 and kinds.count("centre") == 1
    assert kinds.count("specialised") == 1
    with pytest.raises(KeyError):
        jur.station("nope")


@pytest.mark.parametrize("street_id", ["yinhang", "pengpu"])
def test_grids_tile_the_street(jur: Jurisdiction, street_id: str) -> None:
    """A street's grids form one polygon without holes, and their areas add up (no overlap)."""
    shapes = [g.shape for g in jur.grids_of(street_id)]
    union = unary_union(shapes)
    assert union.geom_type == "Polygon"
    assert len(union.interiors) == 0
    assert sum(s.area for s in shapes) == pytest.approx(union.area, rel=1e-9)


def test_yinhang_is_where_it_should_be(jur: Jurisdiction) -> None:
    """The demo street sits around 31.33 N 121.52 E; 彭浦新村 around 31.30 N 121.45 E."""
    yh = unary_union([g.shape for g in jur.grids_of("yinhang")])
    assert yh.covers(Point(121.52, 31.33))
    minx, miny, maxx, maxy = yh.bounds
    assert 121.50 <= minx and maxx <= 121.55 and 31.31 <= miny and maxy <= 31.35
    pp = unary_union([g.shape for g in jur.grids_of("pengpu")])
    assert pp.covers(Point(121.45, 31.30))
    assert not yh.intersects(pp)


def test_categories(jur: Jurisdiction) -> None:
    """Exactly the 12 categories, each with an icon and a complete SLA per priority."""
    assert {c: jur.categories[c].name_zh for c in jur.categories} == CATEGORY_NAMES
    for cat in jur.categories.values():
        assert cat.name_en and cat.icon and not cat.icon.isascii()
        assert cat.dup_radius_m > 0 and cat.dup_window_hours > 0
        for p in PRIORITIES:
            assert 0 < cat.sla.ack(p) <= cat.sla.resolve(p)
    assert jur.category("gas_hazard").default_priority == "urgent"
    assert jur.category("other").dup_radius_m == 50


def test_routing_rules(jur: Jurisdiction) -> None:
    """Gas to the gas unit street-wide; a grid rule beats the grid's own station."""
    station, rule = jur.station_for("gas_hazard", "yh-g3")
    assert station.id == "yh-gas" and station.kind == "specialised"
    assert rule is not None and rule.grid_id is None and rule.reason_zh
    assert jur.station_for("gas_hazard", "pp-g5")[0].id == "pp-gas"
    assert jur.station_for("shared_bikes", "yh-g1")[0].id == "yh-s2"
    assert jur.station_for("shared_bikes", "yh-g4") == (jur.station("yh-s4"), None)
    assert jur.station_for("code_damaged", "yh-g5")[0].id == "yh-centre"
    assert jur.rule_for("sanitation", "yh-g1") is None


def test_grid_at(jur: Jurisdiction) -> None:
    """Point lookups: inside a grid, and far outside any."""
    grid = jur.grid_at(31.340, 121.511)
    assert grid is not None and grid.id == "yh-g1"
    assert jur.grid_at(31.2304, 121.4737) is None  # People's Square, another street
    assert jur.grid_at(0.0, 0.0) is None


def test_grid_geojson(jur: Jurisdiction) -> None:
    """The map export is a FeatureCollection matching the loaded grids."""
    fc = grid_geojson(jur)
    assert fc["type"] == "FeatureCollection"
    assert [f["properties"]["grid_id"] for f in fc["features"]] == list(jur.grids)
    feature = fc["features"][0]
    assert feature["properties"]["station_name_zh"] == "开鲁网格站"
    assert shape(feature["geometry"]).equals(jur.grid("yh-g1").shape)
    assert len(grid_geojson(jur, "yinhang")["features"]) == 5
    json.dumps(fc)  # serialisable as is


def test_version_is_a_stable_digest(jur: Jurisdiction, tmp_path: Path) -> None:
    """Same files, same version; any edit changes it."""
    root = tmp_path / "j"
    shutil.copytree(JURISDICTIONS, root)
    assert load_jurisdiction(root).version == jur.version
    path = root / "yinhang" / "street.json"
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert load_jurisdiction(root).version != jur.version


# --- demo places ---------------------------------------------------------------------------


def test_places_lie_in_their_grid(jur: Jurisdiction, places: list[Place]) -> None:
    """At least 24 places, all in 殷行街道, each inside the grid it names and in no other."""
    assert len(places) >= 24
    assert {p.grid_id for p in places} == {f"yh-g{i}" for i in range(1, 6)}
    for place in places:
        containing = [g.id for g in jur.grids.values() if g.covers(place.lat, place.lon)]
        assert containing == [place.grid_id], place.place_id


def test_places_have_unique_valid_codes(places: list[Place]) -> None:
    """Every code is valid, canonical and unique; ids are unique too."""
    assert len({p.code for p in places}) == len(places)
    assert len({p.place_id for p in places}) == len(places)
    for place in places:
        assert codes.is_valid(place.code)
        assert codes.validate(place.code) == place.code


def test_places_cover_the_kinds_of_place(places: list[Place]) -> None:
    """Estate gates, lampposts on the named roads, rider stations."""
    names = " ".join(p.name_zh for p in places)
    for word in ("门", "路灯杆", "骑手驿站", "国和路", "开鲁路", "市光路", "嫩江路", "闸殷路"):
        assert word in names
    for road in ("民府路", "殷行路"):
        assert road in names


# --- broken copies -------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A writable copy of the shipped jurisdiction."""
    dest = tmp_path / "jurisdictions"
    shutil.copytree(JURISDICTIONS, dest)
    return dest


def edit(path: Path, change: Callable[[Any], object]) -> None:
    """Rewrite a JSON file through a function that changes the parsed data in place."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), "utf-8")


def by_id(items: list[dict[str, Any]], ident: str, key: str = "id") -> dict[str, Any]:
    """The entry with this id in a list file."""
    return next(i for i in items if i[key] == ident)


def feature(fc: dict[str, Any], grid_id: str) -> dict[str, Any]:
    """The feature of one grid in a FeatureCollection."""
    return next(f for f in fc["features"] if f["properties"]["grid_id"] == grid_id)


def refused(root: Path, *words: str) -> ReferenceError:
    """Loading fails with a ReferenceError whose message holds every word."""
    with pytest.raises(ReferenceError) as info:
        load_jurisdiction(root)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return info.value


def test_pydantic_error_names_file_entry_and_field(root: Path) -> None:
    """A station without name_zh."""
    edit(root / "yinhang" / "stations.json", lambda s: by_id(s, "yh-s3").pop("name_zh"))
    err = refused(root, "stations.json", "'yh-s3'", "name_zh")
    assert err.file is not None and err.file.endswith("stations.json")
    assert err.entry is not None and "yh-s3" in err.entry


def test_bad_category_priority(root: Path) -> None:
    """A category with an unknown default priority."""
    edit(root / "categories.json", lambda c: by_id(c, "gas_hazard").update(default_priority="asap"))
    refused(root, "categories.json", "'gas_hazard'", "default_priority")


def test_sla_missing_a_priority(root: Path) -> None:
    """Every priority needs a deadline."""
    edit(root / "categories.json", lambda c: by_id(c, "sanitation")["sla"]["ack_hours"].pop("high"))
    refused(root, "categories.json", "'sanitation'", "ack_hours", "high")


def test_sla_ack_longer_than_resolve(root: Path) -> None:
    """Signing for cannot be allowed longer than resolving."""
    edit(root / "categories.json", lambda c: by_id(c, "other")["sla"]["ack_hours"].update(normal=99))
    refused(root, "categories.json", "'other'", "ack_hours[normal]")


def test_sla_clock_is_working_or_calendar_for_every_priority(root: Path) -> None:
    """A clock mode must be one of the two, and named for every priority."""
    edit(root / "categories.json", lambda c: by_id(c, "gas_hazard")["sla"]["clock"].update(urgent="fast"))
    refused(root, "categories.json", "'gas_hazard'", "clock")
    shutil.copy(JURISDICTIONS / "categories.json", root / "categories.json")
    edit(root / "categories.json", lambda c: by_id(c, "gas_hazard")["sla"]["clock"].pop("normal"))
    refused(root, "categories.json", "'gas_hazard'", "clock lacks priorities ['normal']")


def test_a_category_without_clocks_counts_working_time(root: Path) -> None:
    """`clock` and `danger_now_clock` are optional: working time throughout."""

    def strip(c: list[dict[str, Any]]) -> None:
        sla = by_id(c, "gas_hazard")["sla"]
        sla.pop("clock"), sla.pop("danger_now_clock")

    edit(root / "categories.json", strip)
    gas = load_jurisdiction(root).categories["gas_hazard"].sla
    assert [gas.clock_for(p, d) for p in ("normal", "high", "urgent") for d in (False, True)] == [
        "working"
    ] * 6


def test_street_working_hours_default_and_validation(root: Path) -> None:
    """A street without working hours keeps 09:00-12:00,13:00-18:00; impossible hours are refused."""
    edit(root / "pengpu" / "street.json", lambda s: s.pop("working_hours"))
    assert load_jurisdiction(root).streets["pengpu"].working_hours == "09:00-12:00,13:00-18:00"
    edit(root / "pengpu" / "street.json", lambda s: s.update(working_hours="18:00-09:00"))
    refused(root, "street.json", "working_hours", "end before they start")


def test_unknown_key_is_a_typo(root: Path) -> None:
    """Unknown keys are refused rather than ignored."""
    edit(root / "categories.json", lambda c: by_id(c, "other").update(dup_radius=10))
    refused(root, "categories.json", "'other'", "dup_radius")


def test_duplicate_category(root: Path) -> None:
    """Two categories with one id."""
    edit(root / "categories.json", lambda c: c.append(dict(by_id(c, "other"))))
    refused(root, "categories.json", "duplicate category id 'other'")


def test_overlapping_grids_named_by_both_ids(root: Path) -> None:
    """Pushing a corner of 开鲁 into 国和 makes them overlap."""

    def push(fc: dict[str, Any]) -> None:
        ring = feature(fc, "yh-g1")["geometry"]["coordinates"][0]
        for pos in ring:
            if pos == [121.5185, 31.345]:
                pos[0] = 121.5230

    edit(root / "yinhang" / "grids.geojson", push)
    refused(root, "grids.geojson", "'yh-g1'", "'yh-g2'", "overlap")


def test_overlap_across_streets(root: Path) -> None:
    """A 彭浦新村 grid moved on top of 殷行 overlaps a grid of another street."""

    def move(fc: dict[str, Any]) -> None:
        ring = feature(fc, "pp-g5")["geometry"]["coordinates"][0]
        for pos in ring:
            pos[0] += 121.515 - 121.45
            pos[1] += 31.33 - 31.302

    edit(root / "pengpu" / "grids.geojson", move)
    refused(root, "grids.geojson", "'pp-g5'", "overlap")


def test_grid_with_unknown_station(root: Path) -> None:
    """A grid naming a station that does not exist."""
    edit(
        root / "yinhang" / "grids.geojson",
        lambda fc: feature(fc, "yh-g2")["properties"].update(station_id="yh-s99"),
    )
    refused(root, "grids.geojson", "'yh-g2'", "unknown station 'yh-s99'")


def test_grid_with_station_of_another_street(root: Path) -> None:
    """A 殷行 grid served by a 彭浦新村 station."""
    edit(
        root / "yinhang" / "grids.geojson",
        lambda fc: feature(fc, "yh-g2")["properties"].update(station_id="pp-s1"),
    )
    refused(root, "grids.geojson", "'yh-g2'", "'pp-s1'", "pengpu")


def test_grid_whose_station_does_not_list_it(root: Path) -> None:
    """The grid and its station must agree."""
    edit(root / "yinhang" / "stations.json", lambda s: by_id(s, "yh-s2").update(grid_ids=[]))
    refused(root, "grids.geojson", "'yh-g2'", "does not list")


def test_station_listing_unknown_grid(root: Path) -> None:
    """A station serving a grid that does not exist."""
    edit(root / "yinhang" / "stations.json", lambda s: by_id(s, "yh-s1")["grid_ids"].append("yh-g42"))
    refused(root, "stations.json", "'yh-s1'", "unknown grid 'yh-g42'")


def test_grid_station_listing_another_stations_grid(root: Path) -> None:
    """A grid station claiming a grid that names a different station."""
    edit(root / "yinhang" / "stations.json", lambda s: by_id(s, "yh-s1")["grid_ids"].append("yh-g2"))
    refused(root, "stations.json", "'yh-s1'", "'yh-g2'", "'yh-s2'")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"category": "pothole"}, ["unknown category 'pothole'"]),
        ({"grid_id": "yh-g9"}, ["unknown grid 'yh-g9'"]),
        ({"grid_id": "pp-g1"}, ["grid 'pp-g1' belongs to street 'pengpu'"]),
        ({"station_id": "yh-nowhere"}, ["unknown station 'yh-nowhere'"]),
        ({"category": "shared_bikes", "grid_id": "yh-g1"}, ["ambiguous", "'yh-r3'"]),
    ],
)
def test_bad_rules(root: Path, change: dict[str, Any], words: list[str]) -> None:
    """Rules must name known categories, grids and stations, and not contradict each other."""
    edit(root / "yinhang" / "rules.json", lambda r: by_id(r, "yh-r1").update(change))
    refused(root, "rules.json", "'yh-r1'", *words)


def test_unclosed_polygon(root: Path) -> None:
    """The first position must be repeated last."""
    edit(
        root / "yinhang" / "grids.geojson",
        lambda fc: feature(fc, "yh-g4")["geometry"]["coordinates"][0].pop(),
    )
    refused(root, "grids.geojson", "'yh-g4'", "not closed")


def test_self_intersecting_polygon(root: Path) -> None:
    """A bow-tie is not a polygon."""
    bowtie = [[121.50, 31.30], [121.51, 31.31], [121.51, 31.30], [121.50, 31.31], [121.50, 31.30]]
    edit(
        root / "yinhang" / "grids.geojson",
        lambda fc: feature(fc, "yh-g4")["geometry"].update(coordinates=[bowtie]),
    )
    refused(root, "grids.geojson", "'yh-g4'", "invalid polygon", "Self-intersection")


def test_swapped_lat_lon(root: Path) -> None:
    """[lat, lon] instead of [lon, lat] is out of range."""

    def swap(fc: dict[str, Any]) -> None:
        ring = feature(fc, "yh-g1")["geometry"]["coordinates"][0]
        for pos in ring:
            pos.reverse()

    edit(root / "yinhang" / "grids.geojson", swap)
    refused(root, "grids.geojson", "'yh-g1'", "[lon, lat]")


@pytest.mark.parametrize(
    ("geometry", "words"),
    [
        ({"type": "Point", "coordinates": [121.52, 31.33]}, ["must be a Polygon", "'Point'"]),
        (None, ["must be a Polygon"]),
        (
            {
                "type": "Polygon",
                "coordinates": [
                    [[121.50, 31.30], [121.51, 31.30], [121.51, 31.31], [121.50, 31.30]],
                    [[121.505, 31.302], [121.508, 31.302], [121.508, 31.305], [121.505, 31.302]],
                ],
            },
            ["holes"],
        ),
    ],
)
def test_unsupported_geometry(root: Path, geometry: Any, words: list[str]) -> None:
    """Only simple Polygons."""
    edit(
        root / "yinhang" / "grids.geojson",
        lambda fc: feature(fc, "yh-g3").update(geometry=geometry),
    )
    refused(root, "grids.geojson", "'yh-g3'", *words)


def test_duplicate_station_across_streets(root: Path) -> None:
    """Ids are global: a 彭浦新村 station cannot reuse a 殷行 id."""

    def rename(stations: list[dict[str, Any]]) -> None:
        by_id(stations, "pp-s1")["id"] = "yh-s1"

    edit(root / "pengpu" / "stations.json", rename)
    refused(root, "pengpu", "stations.json", "duplicate station id 'yh-s1'", "yinhang")


def test_duplicate_grid_across_streets(root: Path) -> None:
    """Grid ids are global too."""
    edit(
        root / "pengpu" / "grids.geojson",
        lambda fc: feature(fc, "pp-g1")["properties"].update(grid_id="yh-g1"),
    )
    refused(root, "pengpu", "grids.geojson", "duplicate grid id 'yh-g1'")


def test_duplicate_street(root: Path) -> None:
    """Two folders claiming one street."""
    edit(root / "pengpu" / "street.json", lambda s: s.update(id="yinhang"))
    refused(root, "street.json", "duplicate street id 'yinhang'")


def test_centre_must_be_a_centre(root: Path) -> None:
    """The street's centre_station_id names a station of kind centre."""
    edit(root / "yinhang" / "street.json", lambda s: s.update(centre_station_id="yh-s1"))
    refused(root, "street.json", "'yinhang'", "'yh-s1'", "centre")


def test_entry_contradicting_its_folder(root: Path) -> None:
    """An explicit street_id must match the folder's street."""
    edit(root / "yinhang" / "stations.json", lambda s: by_id(s, "yh-s2").update(street_id="pengpu"))
    refused(root, "stations.json", "'yh-s2'", "street_id 'pengpu'")


def test_invalid_json(root: Path) -> None:
    """A syntax error names the file."""
    (root / "yinhang" / "rules.json").write_text('[{"id": "yh-r1",]', encoding="utf-8")
    refused(root, "rules.json", "not valid JSON")


def test_missing_file(root: Path) -> None:
    """A street folder without stations."""
    (root / "pengpu" / "stations.json").unlink()
    refused(root, "pengpu", "stations.json", "file not found")


def test_missing_root(tmp_path: Path) -> None:
    """No jurisdiction folder at all."""
    with pytest.raises(ReferenceError, match="not found"):
        load_jurisdiction(tmp_path / "nowhere")


def test_rules_file_is_optional(root: Path) -> None:
    """A street without special routing simply has no rules.json."""
    (root / "pengpu" / "rules.json").unlink()
    j = load_jurisdiction(root)
    assert all(r.street_id == "yinhang" for r in j.rules)
    assert j.station_for("gas_hazard", "pp-g1")[0].id == "pp-s1"


# --- broken places -------------------------------------------------------------------------


@pytest.fixture
def places_copy(tmp_path: Path) -> Path:
    """A writable copy of the demo places."""
    dest = tmp_path / "places.json"
    shutil.copy(PLACES, dest)
    return dest


def test_place_in_the_wrong_grid(jur: Jurisdiction, places_copy: Path) -> None:
    """A place naming a grid that does not contain it."""
    edit(places_copy, lambda p: by_id(p, "yh-p01", "place_id").update(grid_id="yh-g5"))
    assert load_places(places_copy)  # without a jurisdiction only the entries are checked
    with pytest.raises(ReferenceError) as info:
        load_places(places_copy, jur)
    message = str(info.value)
    assert "places.json" in message and "'yh-p01'" in message
    assert "lies in grid 'yh-g1', not in grid 'yh-g5'" in message


def test_place_outside_every_grid(jur: Jurisdiction, places_copy: Path) -> None:
    """A place outside the jurisdiction."""
    edit(places_copy, lambda p: by_id(p, "yh-p02", "place_id").update(lat=31.2304, lon=121.4737))
    with pytest.raises(ReferenceError, match=r"places\.json.*'yh-p02'.*lies in no grid"):
        load_places(places_copy, jur)


def test_place_with_bad_code(places_copy: Path) -> None:
    """A code whose check character is wrong."""

    def spoil(items: list[dict[str, Any]]) -> None:
        place = by_id(items, "yh-p03", "place_id")
        code = place["code"]
        place["code"] = code[:-1] + ("2" if code[-1] != "2" else "3")

    edit(places_copy, spoil)
    with pytest.raises(ReferenceError, match=r"places\.json.*'yh-p03'.*not a valid report code"):
        load_places(places_copy)


def test_place_duplicate_code(places_copy: Path) -> None:
    """Two places cannot share a code."""

    def clash(items: list[dict[str, Any]]) -> None:
        by_id(items, "yh-p05", "place_id")["code"] = by_id(items, "yh-p04", "place_id")["code"]

    edit(places_copy, clash)
    with pytest.raises(ReferenceError, match=r"'yh-p05'.*duplicate code '"):
        load_places(places_copy)


def test_polygon_helper_matches_ring(jur: Jurisdiction) -> None:
    """The cached shapely polygon is the ring, built once."""
    grid = jur.grid("yh-g3")
    assert grid.shape is grid.shape
    assert grid.shape.equals(Polygon(grid.polygon))
