"""The scenario of a simulation: skill groups, agent pools, demand and distributions.

A scenario is a TOML or JSON file whose format is documented in ``docs/simulate.md``;
:func:`load` reads and checks it. Every duration is in seconds, every rate per hour.
Structural errors (a wrong type, an unknown key, a value out of range) are reported by
msgspec with the path of the offending field; cross-references (a tier naming an unknown
group, two pools with one name, ...) by :func:`check`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from dispatchd.errors import DispatchError
from dispatchd.keys import ID_RE

Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e8)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=1e8)]
Ability = Annotated[float, msgspec.Meta(gt=0, le=1e6)]
Factor = Annotated[float, msgspec.Meta(gt=0, le=1000)]


class ScenarioError(DispatchError):
    """The scenario (or a trace) cannot be simulated; the message says where and why."""


# ------------------------------------------------------------------ distributions


class _Dist(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
            tag_field="dist"):
    """Base of the duration distributions (seconds)."""


class Exponential(_Dist, frozen=True, tag="exponential"):
    """Exponential with mean ``mean_s``."""

    mean_s: PositiveSeconds


class Lognormal(_Dist, frozen=True, tag="lognormal"):
    """Log-normal with mean ``mean_s`` and standard deviation ``sd_s`` (of the duration)."""

    mean_s: PositiveSeconds
    sd_s: PositiveSeconds


class Constant(_Dist, frozen=True, tag="constant"):
    """Always ``value_s``."""

    value_s: Seconds


class Uniform(_Dist, frozen=True, tag="uniform"):
    """Uniform between ``min_s`` and ``max_s``."""

    min_s: Seconds
    max_s: Seconds


class Never(_Dist, frozen=True, tag="none"):
    """No duration: a customer with this patience never abandons."""


Dist = Exponential | Lognormal | Constant | Uniform | Never


# ---------------------------------------------------------------------- sections


class TierSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One overflow tier: after ``after_s`` of real wait, ``groups`` join the pool."""

    after_s: Seconds
    groups: list[str]


class GroupSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A skill group: its routing settings and the work its customers bring."""

    name: str
    k: Annotated[float, msgspec.Meta(ge=0, le=1e9)] = 60.0
    m: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 0.5
    priority_unit_s: Seconds = 60.0
    tiers: list[TierSpec] = msgspec.field(default_factory=list)
    handle: Dist | None = None
    patience: Dist | None = None


class AgentPool(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``count`` identical agents ``<name>-1`` .. ``<name>-<count>``."""

    name: str
    count: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 1
    capacity: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    abilities: dict[str, Ability]
    handle_factor: dict[str, Factor] = msgspec.field(default_factory=dict)
    shifts: list[tuple[float, float]] | None = None


class Stream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Poisson arrivals into ``group`` at ``rate_per_hour`` times the profile."""

    group: str
    rate_per_hour: Annotated[float, msgspec.Meta(ge=0, le=1e7)]
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 0
    profile: list[Annotated[float, msgspec.Meta(ge=0, le=1e3)]] | None = None


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole scenario file (see docs/simulate.md)."""

    groups: list[GroupSpec]
    agents: list[AgentPool]
    arrivals: list[Stream] = msgspec.field(default_factory=list)
    name: str = ""
    hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 366)] = 24.0
    seed: int = 1
    service_level_s: Seconds = 20.0
    warmup_minutes: Seconds = 0.0
    profile: list[Annotated[float, msgspec.Meta(ge=0, le=1e3)]] = msgspec.field(
        default_factory=lambda: [1.0]
    )
    profile_step_minutes: Annotated[float, msgspec.Meta(gt=0, le=1e6)] = 60.0
    handle: Dist = Exponential(mean_s=300.0)
    patience: Dist = Never()

    def group(self, name: str) -> GroupSpec:
        """The group called ``name``."""
        return next(g for g in self.groups if g.name == name)

    def handle_of(self, group: str) -> Dist:
        """The handle-time distribution of ``group``'s customers."""
        return self.group(group).handle or self.handle

    def patience_of(self, group: str) -> Dist:
        """The patience distribution of ``group``'s customers."""
        return self.group(group).patience or self.patience


# ----------------------------------------------------------------------- loading


def parse(data: bytes, fmt: Literal["toml", "json"], source: str = "scenario") -> Scenario:
    """Decode and check a scenario given as TOML or JSON text.

    Raises:
        ScenarioError: the text is not valid, or names things inconsistently.
    """
    try:
        raw = tomllib.loads(data.decode()) if fmt == "toml" else json.loads(data)
        scenario = msgspec.convert(raw, Scenario)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"{source}: not valid {fmt.upper()}: {exc}") from None
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    check(scenario, source)
    return scenario


def load(path: str | Path) -> Scenario:
    """Read a scenario file: ``.json`` is JSON, anything else TOML."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(data, "json" if path.suffix.lower() == ".json" else "toml", str(path))


def _id(value: str, what: str, source: str) -> None:
    if not ID_RE.match(value):
        raise ScenarioError(
            f"{source}: {what} {value!r} is not an id (1-64 of A-Z a-z 0-9 _ . @ -)"
        )


def _unique(names: list[str], what: str, source: str) -> None:
    seen: set[str] = set()
    for name in names:
        _id(name, what, source)
        if name in seen:
            raise ScenarioError(f"{source}: {what} {name!r} is defined twice")
        seen.add(name)


def _check_dist(dist: Dist, what: str, source: str, *, patience: bool) -> None:
    if isinstance(dist, Never) and not patience:
        raise ScenarioError(f'{source}: {what}: dist "none" is only for patience')
    if isinstance(dist, Uniform) and dist.min_s > dist.max_s:
        raise ScenarioError(f"{source}: {what}: min_s is greater than max_s")


def _check_tiers(g: GroupSpec, groups: set[str], source: str) -> None:
    where = f"group {g.name!r}"
    if len(g.tiers) > 16:
        raise ScenarioError(f"{source}: {where} has more than 16 overflow tiers")
    seen: set[str] = set()
    last = -1.0
    for tier in g.tiers:
        if tier.after_s <= last:
            raise ScenarioError(f"{source}: {where}: tier after_s must increase")
        last = tier.after_s
        for name in tier.groups:
            if name not in groups:
                raise ScenarioError(f"{source}: {where}: tier names unknown group {name!r}")
            if name == g.name or name in seen:
                raise ScenarioError(
                    f"{source}: {where}: a tier names the group itself or repeats {name!r}"
                )
            seen.add(name)


def _check_pool(pool: AgentPool, groups: set[str], source: str) -> None:
    where = f"agent pool {pool.name!r}"
    if len(f"{pool.name}-{pool.count}") > 64:
        raise ScenarioError(f"{source}: {where}: name too long for its agent ids")
    if not pool.abilities:
        raise ScenarioError(f"{source}: {where} has no abilities (it would serve nobody)")
    for name in [*pool.abilities, *pool.handle_factor]:
        if name not in groups:
            raise ScenarioError(f"{source}: {where} names unknown group {name!r}")
    for start, end in pool.shifts or []:
        if not 0 <= start < end <= start + 24 or start >= 24:
            raise ScenarioError(
                f"{source}: {where}: shift [{start}, {end}] must have 0 <= start < 24 and "
                "start < end <= start + 24"
            )


def check(scenario: Scenario, source: str = "scenario") -> None:
    """Check the cross-references of ``scenario``.

    Raises:
        ScenarioError: naming the first problem found.
    """
    _unique([g.name for g in scenario.groups], "group", source)
    _unique([p.name for p in scenario.agents], "agent pool", source)
    if not scenario.groups:
        raise ScenarioError(f"{source}: no groups")
    groups = {g.name for g in scenario.groups}
    for g in scenario.groups:
        _check_tiers(g, groups, source)
        for what, dist in (("handle", g.handle), ("patience", g.patience)):
            if dist is not None:
                _check_dist(dist, f"group {g.name!r} {what}", source, patience=what != "handle")
    _check_dist(scenario.handle, "handle", source, patience=False)
    _check_dist(scenario.patience, "patience", source, patience=True)
    for pool in scenario.agents:
        _check_pool(pool, groups, source)
    for i, stream in enumerate(scenario.arrivals):
        if stream.group not in groups:
            raise ScenarioError(f"{source}: arrivals[{i}] names unknown group {stream.group!r}")
        if stream.profile == []:
            raise ScenarioError(f"{source}: arrivals[{i}]: profile is empty")
    if not scenario.profile:
        raise ScenarioError(f"{source}: profile is empty")
