"""The demo world on the embedded Ladybug store: deterministic, idempotent, and true to its rules.

A tiny data directory (20 users, where user ``j`` is followed by every user
``i > j``; 10 stories by four authors of distinct story counts) makes every
rule checkable against expectations written out here; the real files are
built once (``slow``).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from datasets.demo import DemoSummary, build_demo_world, plan_demo_world
from datasets.importers import read_edge_list
from datasets.stories import read_hn, read_medium
from stores.graph import GraphStore, ImportSummary
from stores.ladybug import LadybugGraph

WEEK = 7 * 24 * 3600
USERS = 20

HN = """\
id,title,url,num_points,num_comments,author,created_at\r
1,Ask HN: one,,30,1,ann,8/4/2016 11:52\r
2,Ask HN: two,,13,1,ann,8/5/2016 11:52\r
3,Ask HN: three,https://example.com/3,41,1,ann,8/6/2016 11:52\r
4,Show HN: four,https://example.com/4,1,1,ann,8/7/2016 11:52\r
5,Five,https://example.com/5,9,1,bob,8/8/2016 11:52\r
6,Six,https://example.com/6,200,1,bob,8/9/2016 11:52\r
"""

MEDIUM = """\
title,article_url,claps,reading_time,date,tag_list
T1,https://towardsdatascience.com/t1,120,4,2020-01-03,"['Python', 'Data Science']"
T2,https://towardsdatascience.com/t2,400,5,2020-01-04,"['Python', 'Data Science']"
T3,https://towardsdatascience.com/t3,2000,6,2020-01-05,"['Python']"
C1,https://medium.com/@cat/c1,49,3,2020-01-06,"['Data Science']"
"""

AUTHOR_USERS = {"hn:ann": "0", "md:pub:towardsdatascience.com": "1", "hn:bob": "2", "md:@cat": "3"}
"""Story counts 4, 3, 2, 1 → users with 19, 18, 17, 16 followers."""


def tiny_data(directory: Path) -> Path:
    directory.mkdir()
    edges = [f"{i}\t{j}" for i in range(USERS) for j in range(i)] + ["5\t5"]
    (directory / "soc-Slashdot0902.txt").write_text("# tiny\n" + "\n".join(edges) + "\n")
    (directory / "hacker_news.csv").write_bytes(HN.encode())
    (directory / "medium_articles_datascience_2020.csv").write_text(MEDIUM)
    return directory


async def build(
    path: Path, data: Path, seed: int = 42
) -> tuple[DemoSummary, dict[str, set[tuple[object, ...]]]]:
    """Build into a fresh or existing database at ``path``; return the summary and the edge sets."""
    graph = await LadybugGraph.open(path)
    try:
        summary = await build_demo_world(graph, data, seed=seed)
        return summary, await edge_sets(graph)
    finally:
        await graph.aclose()


async def edge_sets(graph: GraphStore) -> dict[str, set[tuple[object, ...]]]:
    session = graph.session()
    queries = {
        "RECOMMENDED": (
            "MATCH (u:User)-[r:RECOMMENDED]->(p:Post) RETURN u.id AS u, p.id AS p, r.at AS at"
        ),
        "READ": "MATCH (u:User)-[r:READ]->(p:Post) RETURN u.id AS u, p.id AS p, r.at AS at",
        "WROTE": "MATCH (u:User)-[:WROTE]->(p:Post) RETURN u.id AS u, p.id AS p",
        "FOLLOWS_TOPIC": "MATCH (u:User)-[:FOLLOWS_TOPIC]->(t:Topic) RETURN u.id AS u, t.name AS t",
        "FOLLOWS_PUBLICATION": (
            "MATCH (u:User)-[:FOLLOWS_PUBLICATION]->(b:Publication) RETURN u.id AS u, b.name AS b"
        ),
    }
    return {
        name: {tuple(row.values()) for row in await session.read(cypher)}
        for name, cypher in queries.items()
    }


async def test_same_seed_same_world_other_seed_other_draws(tmp_path: Path) -> None:
    """Two builds with seed 42 in two databases give identical graphs; seed 7 draws differently."""
    data = tiny_data(tmp_path / "data")

    first, edges = await build(tmp_path / "a", data)
    second, same = await build(tmp_path / "b", data)
    _, other = await build(tmp_path / "c", data, seed=7)

    assert first == second
    assert edges == same
    assert edges["RECOMMENDED"]
    assert other["RECOMMENDED"] != edges["RECOMMENDED"]
    assert other["WROTE"] == edges["WROTE"]  # distinct story counts leave no tie to shuffle


async def test_rules_hold_on_the_tiny_world(tmp_path: Path) -> None:
    """Authors map by rank, recommenders follow points/claps, and every synthetic rule holds."""
    data = tiny_data(tmp_path / "data")
    summary, edges = await build(tmp_path / "graph", data)
    stories = {s.id: s for s in read_hn(data / "hacker_news.csv")[0]}
    stories |= {s.id: s for s in read_medium(data / "medium_articles_datascience_2020.csv")[0]}

    author_of = {post: user for user, post in edges["WROTE"]}
    assert author_of == {sid: AUTHOR_USERS[s.author] for sid, s in stories.items()}
    followers = {str(j): USERS - 1 - j for j in range(USERS)}
    recommenders = Counter(post for _, post, _ in edges["RECOMMENDED"])
    readers = Counter(post for _, post, _ in edges["READ"])
    for sid, story in stories.items():
        if sid.startswith("hn:"):
            wanted = math.ceil(max(story.claps - 1, 0) / 4)
        else:
            wanted = math.ceil(story.claps / 50)
        k = min(followers[author_of[sid]], wanted)
        assert recommenders[sid] == k, sid
        assert readers[sid] == min(followers[author_of[sid]], 2 * k), sid
    for user, post, at in edges["RECOMMENDED"]:
        assert int(user) > int(author_of[post])  # the recommender follows the author
        assert (user, post, at) in edges["READ"]
    for _, post, at in edges["READ"]:
        published = stories[post].published_at
        assert published is not None
        assert published <= int(str(at)) < published + WEEK
    votes = Counter(
        (user, tag) for user, post, _ in edges["RECOMMENDED"] for tag in stories[post].tags
    )
    assert edges["FOLLOWS_TOPIC"] == {pair for pair, n in votes.items() if n >= 3}
    assert edges["FOLLOWS_TOPIC"]
    site_votes = Counter(
        (user, stories[post].publication)
        for user, post, _ in edges["RECOMMENDED"]
        if stories[post].publication
    )
    assert edges["FOLLOWS_PUBLICATION"] == {pair for pair, n in site_votes.items() if n >= 3}
    assert summary.mapped_authors == 4
    assert summary.edges.self_loops == 1


async def test_building_twice_adds_nothing(tmp_path: Path) -> None:
    """A second build on the same database reports everything as existing and changes no edge."""
    data = tiny_data(tmp_path / "data")
    first, edges = await build(tmp_path / "graph", data)

    again, same = await build(tmp_path / "graph", data)

    assert same == edges
    assert [what for what, done in again.imports() if done.created] == []
    assert again.recommended == ImportSummary(0, first.recommended.created)
    assert again.read == ImportSummary(0, first.read.created)
    assert again.stories.posts == ImportSummary(0, 10)
    assert again.follow_graph.follows == ImportSummary(0, first.follow_graph.follows.created)
    assert again.follows_topic.created == again.follows_publication.created == 0


@pytest.mark.slow
async def test_real_demo_world(tmp_path: Path, data_dir: Path) -> None:
    """The real world: its totals, graph equal to a re-derived plan, followers only, idempotent."""
    steps: list[str] = []
    graph = await LadybugGraph.open(tmp_path / "graph")
    try:
        summary = await build_demo_world(
            graph, data_dir, on_step=lambda what, _: steps.append(what)
        )
        edges = read_edge_list(data_dir / "soc-Slashdot0902.txt")
        stories = read_hn(data_dir / "hacker_news.csv")[0]
        stories += read_medium(data_dir / "medium_articles_datascience_2020.csv")[0]
        plan = plan_demo_world(edges, stories, seed=42)
        session = graph.session()
        recommended = await session.read(
            "MATCH (u:User)-[r:RECOMMENDED]->(p:Post) RETURN u.id AS u, p.id AS p, r.at AS at"
        )
        outsiders = await session.read(
            "MATCH (u:User)-[:RECOMMENDED]->(:Post)<-[:WROTE]-(a:User) "
            "WHERE NOT EXISTS { MATCH (u)-[:FOLLOWS]->(a) } RETURN count(*) AS n"
        )
        again = await build_demo_world(graph, data_dir)
    finally:
        await graph.aclose()

    assert summary.seed == 42
    assert summary.follow_graph.follows.created == 870_161
    assert summary.stories.posts.created == 20_100 + 16_039
    assert summary.mapped_authors == 16_257
    assert summary.recommended.created == len(plan.recommended) == 237_119
    assert summary.read.created == len(plan.read) == 419_385
    assert (summary.follows_topic.created, summary.follows_publication.created) == (5_341, 4_969)
    assert {(r["u"], r["p"], r["at"]) for r in recommended} == {
        (u, p, at) for (u, p), at in zip(plan.recommended, plan.recommended_at, strict=True)
    }
    assert outsiders == [{"n": 0}]
    assert [what for what, done in again.imports() if done.created] == []
    assert again.recommended == ImportSummary(0, 237_119)
    assert again.stories.posts == ImportSummary(0, 36_139)
    assert len(steps) == 8
