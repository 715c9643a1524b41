"""The feeds benchmark's functions at a tiny size: structure and counts, never speed.

The benchmark itself (``starling bench feeds``) measures at a million
candidates; here it runs on 20,000 SYNTHETIC stories drawn from the real
files, so that a change that breaks it (a renamed figure, a user drawn with
the wrong candidate count, a page the actors answer differently) fails in
seconds. Timings are only checked to be there; counts are checked against
counts made here, apart from the run: the catalog against the same world
built again from the same seed, each user's candidates against what
``aggregate`` finds for the same user drawn again, derived figures against
the figures they are derived from.
"""

from __future__ import annotations

import json
import statistics
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
    SyntheticUser,
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


def drawn_again(world: SyntheticWorld, inputs: Inputs) -> list[tuple[SyntheticUser, int]]:
    """The users a run with ``inputs`` measures, drawn again here as ``bench.feeds.measure``
    draws them (sizes first, then the crowd, from ``default_rng([seed, 1])``), each with the
    candidate count ``aggregate`` finds for it."""
    view = world.catalog.view()
    hot = trending(view, world.now, PipelineParams())
    rng = np.random.default_rng([inputs.seed, 1])
    targets = [*inputs.sizes, *[inputs.parallel_size] * inputs.parallel]
    users = [make_user(world, view, hot, target, rng, f"syn:user:{i}")
             for i, target in enumerate(targets)]  # fmt: skip
    return [
        (user, len(aggregate(view, user.context.resolve(view, user.name), hot))) for user in users
    ]


def test_the_benchmark_writes_every_figure_with_users_on_their_targets(
    data_dir: Path, tmp_path: Path, world: SyntheticWorld
) -> None:
    """A tiny run writes the JSON with every figure and budget; its catalog is the seed's, and
    every user's candidate count is the one ``aggregate`` finds for that user, on target."""
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
    catalog = document["catalog"]
    assert (catalog["stories"], catalog["authors"], catalog["readers"]) == (
        STORIES, world.authors, world.readers
    )  # fmt: skip
    assert catalog["recommendations"] == int(world.catalog.view().recommendations.sum())
    assert set(document["catalog"]["build_s_by_phase"]) == {
        "draw",
        "add_columns",
        "load_recommendation_indices",
    }
    (measured, found), *crowd_drawn = drawn_again(world, inputs)
    (row,) = document["rows"]
    for figure in ("cold", "pipeline", "warm"):
        assert row[f"{figure}_p50_ms"] > 0
        assert row[f"{figure}_p99_ms"] >= row[f"{figure}_p50_ms"]
    assert row["candidates"] == measured.candidates == found
    assert abs(row["candidates"] - 5_000) <= TOLERANCE * 5_000
    (user,) = document["users"]
    assert user["candidates"] == row["candidates"]
    assert (user["followed_authors"], user["followed_readers"]) == (
        measured.authors, measured.friends
    )  # fmt: skip
    assert user["off_target_pct"] == pytest.approx(100 * (row["candidates"] - 5_000) / 5_000)
    assert abs(user["off_target_pct"]) <= 100 * TOLERANCE
    (steps,) = document["steps_ms"]
    assert all(steps[step] >= 0 for step in STEPS)
    assert steps["sum"] == pytest.approx(sum(steps[step] for step in STEPS))
    crowd = document["throughput"]
    assert crowd["users"] == 3
    assert crowd["candidates_each"] == [drawn.candidates for drawn, _ in crowd_drawn]
    assert crowd["candidates_each"] == [count for _, count in crowd_drawn]
    assert all(abs(count - 2_000) <= TOLERANCE * 2_000 for count in crowd["candidates_each"])
    assert len(crowd["wall_s_each_round"]) == crowd["rounds"] == 1
    assert crowd["wall_s"] == statistics.median(crowd["wall_s_each_round"])
    assert crowd["builds_per_s"] == pytest.approx(crowd["users"] / crowd["wall_s"])
    assert crowd["build_threads"] >= 1
    memory = document["memory"]
    assert memory["builders"] == 20
    assert memory["kb_per_builder"] == pytest.approx(memory["bytes_per_builder"] / 1024)
    assert memory["kb_per_builder"] > 0
    assert document["trending_ms"]["p50"] > 0
    assert len(document["budgets"]) == 3
    cold, warm, kb = document["budgets"]
    assert cold["measured"] == row["cold_p50_ms"]
    assert warm["measured"] == row["warm_p50_ms"]
    assert (kb["unit"], kb["limit"], kb["measured"]) == ("KB", 50.0, memory["kb_per_builder"])
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
