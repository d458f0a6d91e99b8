"""Versions on a schedule, and the expiry policy."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from opencave.errors import InvalidRequest
from opencave.instance import OpenCave
from opencave.materialize.schedule import DailyMaterialization, next_run, parse_daily_time
from opencave.materialize.versions import Status
from opencave.synth import world

DS = world.DATASTACK


def test_daily_times_and_the_next_run():
    assert parse_daily_time("08:10") == time(8, 10)
    with pytest.raises(InvalidRequest, match="HH:MM"):
        parse_daily_time("8h10")
    morning = datetime(2026, 3, 7, 7, 0, tzinfo=UTC)
    assert next_run(morning, time(8, 10)) == datetime(2026, 3, 7, 8, 10, tzinfo=UTC)
    evening = datetime(2026, 3, 7, 9, 0, tzinfo=UTC)
    assert next_run(evening, time(8, 10)) == datetime(2026, 3, 8, 8, 10, tzinfo=UTC)


@pytest.fixture
def copy(synth_dir, tmp_path):
    shutil.copytree(synth_dir, tmp_path / "data")
    cave = OpenCave(tmp_path / "data")
    yield cave
    cave.close()


def test_a_scheduled_run_makes_a_version_of_each_datastack(copy):
    runs = DailyMaterialization(time(8, 10), copy.info.datastack_names, copy.new_version)
    runs.run_once()
    latest = copy.versions.latest(DS)
    assert latest is not None and latest.version == 1719


def test_versions_expire_by_policy_and_can_be_kept(copy):
    copy.settings = replace(copy.settings, version_lifetime_days=2)
    made = copy.new_version(DS, datetime.now(UTC) - timedelta(days=3)).version
    assert made.expires_on is not None
    copy.new_version(DS)  # expiry runs after each new version
    assert copy.versions.get(DS, made.version).status is Status.EXPIRED
    assert made.version not in [v.version for v in copy.versions.available(DS)]
    assert made.version in [v.version for v in copy.versions.available(
        DS, include_expired=True)]
    kept = copy.versions.keep(DS, made.version)
    assert kept.status is Status.AVAILABLE and kept.expires_on is None
    assert all(v.expires_on is None for v in copy.versions.available(DS)
               if v.version <= 1718)  # the public versions are kept forever
