"""The feeds benchmark's functions at a tiny size: structure and counts, never speed.

The benchmark itself (``starling bench feeds``) measures at a million
candidates; here it runs on 20,000 SYNTHETIC stories drawn from the real
files, so that a change that breaks it (a renamed figure, a user drawn with
the wrong candidate count, a page the actors answer differently) fails in
seconds. Timings are only checked to be there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actors.feeds import PipelineParams, aggregate, trending
from bench.feeds import (
    LABEL,
    STEPS,
    TOLERANCE,
    Inputs,
    QuietSteps,
    RealStories,
    SyntheticWorld,
    build_world,
    make_user,
    parse_sizes,
    read_real,
    run,
)

STORIES = 20_000


@pytest.fixture(scope="module")
def real(data_dir: Path) -> RealStories:
    return read_real(data_dir)


@pytest.fixture(scope="module")
def world(real: RealStories) -> SyntheticWorld:
    return build_world(real, STORIES, seed=42, steps=QuietSteps())


def test_the_benchmark_writes_every_figure_with_users_on_their_targets(
    data_dir: Path, tmp_path: Path
) -> None:
    """A tiny run writes the JSON with every figure, budget and candidate count on target."""
    inputs = Inputs(
        sizes=(5_000,),
        stories=STORIES,
        repeat=3,
        warm_reads=10,
        parallel=3,
        parallel_size=2_000,
        rounds=1,
        idle_builders=20,
    )
    path = run(inputs, source=data_dir, output=tmp_path / "feeds.json")
    document = json.loads(path.read_text())

    assert document["benchmark"] == "feeds"
    assert document["label"] == LABEL
    assert LABEL in document["data"]
    assert document["seed"] == 42
    assert {"python", "cpus"} <= set(document["machine"])
    assert document["inputs"]["files"]
    assert document["catalog"]["stories"] == STORIES
    assert document["catalog"]["recommendations"] > 0
    assert set(document["catalog"]["build_s_by_phase"]) == {
        "draw",
        "add_columns",
        "load_recommendation_indices",
    }
    (row,) = document["rows"]
    for figure in ("cold", "pipeline", "warm"):
        assert row[f"{figure}_p50_ms"] > 0
        assert row[f"{figure}_p99_ms"] >= row[f"{figure}_p50_ms"]
    assert abs(row["candidates"] - 5_000) <= TOLERANCE * 5_000
    (user,) = document["users"]
    assert user["candidates"] == row["candidates"]
    assert abs(user["off_target_pct"]) <= 100 * TOLERANCE
    (steps,) = document["steps_ms"]
    assert all(steps[step] >= 0 for step in STEPS)
    assert steps["sum"] == pytest.approx(sum(steps[step] for step in STEPS))
    crowd = document["throughput"]
    assert crowd["users"] == 3
    assert all(abs(count - 2_000) <= TOLERANCE * 2_000 for count in crowd["candidates_each"])
    assert crowd["builds_per_s"] > 0
    assert crowd["build_threads"] >= 1
    assert document["memory"]["builders"] == 20
    assert document["memory"]["kb_per_builder"] > 0
    assert document["trending_ms"]["p50"] > 0
    budgets = {budget["unit"]: budget for budget in document["budgets"]}
    assert len(document["budgets"]) == 3
    assert budgets["KB"]["limit"] == 50.0
    for budget in document["budgets"]:
        assert isinstance(budget["met"], bool)
        assert budget["gap"] == pytest.approx(budget["measured"] - budget["limit"])


@pytest.mark.parametrize("target", [1_000, 5_000, 15_000])
def test_a_drawn_user_gets_the_candidate_count_that_aggregate_finds(
    world: SyntheticWorld, target: int
) -> None:
    """The count reported for a drawn user is what ``aggregate`` finds, within 5% of the target."""
    view = world.catalog.view()
    params = PipelineParams()
    hot = trending(view, world.now, params)
    user = make_user(world, view, hot, target, np.random.default_rng(target), f"u{target}")
    raw = user.context
    context = raw.resolve(view, user.name)

    assert len(aggregate(view, context, hot)) == user.candidates
    assert abs(user.candidates - target) <= TOLERANCE * target
    assert len(context.following) == user.authors + user.friends


def test_the_synthetic_catalog_draws_its_values_from_the_real_stories(
    real: RealStories, world: SyntheticWorld
) -> None:
    """Claps, reading times, topics and publications all come from the real stories."""
    view = world.catalog.view()

    assert view.size == STORIES
    assert set(np.unique(view.claps).tolist()) <= set(real.claps.tolist())
    assert set(np.unique(view.reading_time).tolist()) <= set(real.reading_time.tolist())
    assert set(view.topic_names[: view.topics]) <= {tag for tags in real.tags for tag in tags}
    assert set(view.publication_names[: view.publications]) <= set(real.publications)
    assert real.published_at.min() <= view.published_at.min()
    assert view.published_at.max() < world.now
    assert view.users == world.authors + world.readers
    assert int(view.recommendations.sum()) == world.recommendations


def test_sizes_parse_with_suffixes() -> None:
    """``--sizes`` takes counts with k and M suffixes and rejects nonsense."""
    assert parse_sizes("100k,300k,1M") == (100_000, 300_000, 1_000_000)
    assert parse_sizes("5000, 1_000") == (5_000, 1_000)
    with pytest.raises(ValueError, match="size"):
        parse_sizes("0")
    with pytest.raises(ValueError, match="could not convert"):
        parse_sizes("many")
