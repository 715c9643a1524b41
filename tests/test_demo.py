"""The demo world on the embedded Ladybug store: deterministic, idempotent, and true to its rules.

A tiny data directory (20 users, where user ``j`` is followed by every user
``i > j``; 10 stories by four authors of distinct story counts, and 3 Reddit
posts by two more) makes every rule checkable against expectations written
out here; the real files are built once (``slow``), and the session's demo
world (``demo_graph``) is served to show that the replayed Reddit threads
are real posts.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import trio

from client import RpcError, open_client, rpc
from datasets.demo import DemoSummary, build_demo_world, plan_demo_world
from datasets.importers import read_edge_list
from datasets.reddit import busiest_threads, read_comments
from datasets.stories import REDDIT_TOPIC, read_hn, read_medium, read_reddit
from stores.graph import GraphStore, ImportSummary
from stores.ladybug import LadybugGraph
from tests.in_process import serving

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

REDDIT = """\
id,title,text,author,score,upvote_ratio,num_comments,created_utc,subreddit,url,permalink,date
r1,"Tariffs, again","Two
lines",dee,41,0.9,3,1747443188.0,AusFinance,,/r/AusFinance/comments/r1/x/,2025-05-17
r2,Second,,dee,9,0.9,0,1747529588.0,AusFinance,https://example.com/2,/r/AusFinance/comments/r2/y/,x
r3,Third,,[deleted],13,0.5,1,1747615988.0,ASX,,/r/ASX/comments/r3/z/,2025-05-19
"""

AUTHOR_USERS = {"hn:ann": "0", "md:pub:towardsdatascience.com": "1", "hn:bob": "2", "md:@cat": "3"}
"""Story counts 4, 3, 2, 1 → users with 19, 18, 17, 16 followers."""
REDDIT_USERS = {"rd:dee": "4", "rd:sub:ASX": "5"}
"""Reddit post counts 2, 1 → the next users of the ranking, with 15 and 14 followers."""


def tiny_data(directory: Path) -> Path:
    directory.mkdir()
    edges = [f"{i}\t{j}" for i in range(USERS) for j in range(i)] + ["5\t5"]
    (directory / "soc-Slashdot0902.txt").write_text("# tiny\n" + "\n".join(edges) + "\n")
    (directory / "hacker_news.csv").write_bytes(HN.encode())
    (directory / "medium_articles_datascience_2020.csv").write_text(MEDIUM)
    (directory / "reddit_posts_au_2025.csv").write_text(REDDIT)
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
    """Authors map by rank (Reddit's onto the next users), recommenders follow
    points/claps/score, and every synthetic rule holds."""
    data = tiny_data(tmp_path / "data")
    summary, edges = await build(tmp_path / "graph", data)
    stories = {s.id: s for s in read_hn(data / "hacker_news.csv")[0]}
    stories |= {s.id: s for s in read_medium(data / "medium_articles_datascience_2020.csv")[0]}
    reddit = {s.id for s in read_reddit(data / "reddit_posts_au_2025.csv")[0]}
    stories |= {s.id: s for s in read_reddit(data / "reddit_posts_au_2025.csv")[0]}

    author_of = {post: user for user, post in edges["WROTE"]}
    mapping = AUTHOR_USERS | REDDIT_USERS
    assert author_of == {sid: mapping[s.author] for sid, s in stories.items()}
    followers = {str(j): USERS - 1 - j for j in range(USERS)}
    recommenders = Counter(post for _, post, _ in edges["RECOMMENDED"])
    readers = Counter(post for _, post, _ in edges["READ"])
    assert {post: recommenders[post] for post in sorted(reddit)} == {"r1": 10, "r2": 2, "r3": 3}
    for sid, story in stories.items():
        if sid.startswith("hn:") or sid in reddit:
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
    assert summary.mapped_authors == 6
    assert summary.edges.self_loops == 1
    assert (summary.reddit.rows, summary.reddit.kept) == (3, 3)


def test_the_reddit_posts_change_no_other_draw(tmp_path: Path) -> None:
    """The plan with the Reddit posts is the plan without them plus theirs alone, so a world
    built before they were added gains only them: their posts, authors and draws."""
    data = tiny_data(tmp_path / "data")
    edges = read_edge_list(data / "soc-Slashdot0902.txt")
    stories = read_hn(data / "hacker_news.csv")[0]
    stories += read_medium(data / "medium_articles_datascience_2020.csv")[0]
    reddit = read_reddit(data / "reddit_posts_au_2025.csv")[0]

    without = plan_demo_world(edges, stories)
    plan = plan_demo_world(edges, stories, reddit=reddit)

    assert plan.authors == without.authors | REDDIT_USERS
    assert plan.recommended[: len(without.recommended)] == without.recommended
    assert plan.recommended_at[: len(without.recommended)] == without.recommended_at
    assert plan.read[: len(without.read)] == without.read
    assert plan.read_at[: len(without.read)] == without.read_at
    ids = {story.id for story in reddit}
    assert {post for _, post in plan.recommended[len(without.recommended) :]} == ids
    assert {post for _, post in plan.read[len(without.read) :]} == ids
    assert set(without.follows_topic) <= set(plan.follows_topic)
    assert {t for _, t in set(plan.follows_topic) - set(without.follows_topic)} <= {REDDIT_TOPIC}
    assert set(without.follows_publication) <= set(plan.follows_publication)


async def test_building_twice_adds_nothing(tmp_path: Path) -> None:
    """A second build on the same database reports everything as existing and changes no edge."""
    data = tiny_data(tmp_path / "data")
    first, edges = await build(tmp_path / "graph", data)

    again, same = await build(tmp_path / "graph", data)

    assert same == edges
    assert [what for what, done in again.imports() if done.created] == []
    assert again.recommended == ImportSummary(0, first.recommended.created)
    assert again.read == ImportSummary(0, first.read.created)
    assert again.stories.posts == ImportSummary(0, 13)
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
        reddit = read_reddit(data_dir / "reddit_posts_au_2025.csv")[0]
        plan = plan_demo_world(edges, stories, seed=42, reddit=reddit)
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
    assert (summary.reddit.rows, summary.reddit.kept, summary.reddit.malformed) == (95, 95, 0)
    assert summary.stories.posts.created == 20_100 + 16_039 + 95
    assert (summary.stories.topics.created, summary.stories.publications.created) == (5_823, 8_322)
    assert summary.mapped_authors == 16_257 + 68
    assert summary.recommended.created == len(plan.recommended) == 237_119 + 431
    assert summary.read.created == len(plan.read) == 419_385 + 553
    assert (summary.follows_topic.created, summary.follows_publication.created) == (5_373, 5_001)
    assert {(r["u"], r["p"], r["at"]) for r in recommended} == {
        (u, p, at) for (u, p), at in zip(plan.recommended, plan.recommended_at, strict=True)
    }
    assert outsiders == [{"n": 0}]
    assert [what for what, done in again.imports() if done.created] == []
    assert again.recommended == ImportSummary(0, 237_550)
    assert again.stories.posts == ImportSummary(0, 36_234)
    assert len(steps) == 8


# -- the session's demo world: the replayed threads are real posts ---------------------------


@pytest.mark.slow
async def test_the_demo_world_holds_the_reddit_posts(demo_graph: Path, data_dir: Path) -> None:
    """Each of the 95 Reddit posts is a Post under its Reddit id with its title, link, score,
    time, subreddit and topic, written by a graph user whose Post.author agrees."""
    posts = {story.id: story for story in read_reddit(data_dir / "reddit_posts_au_2025.csv")[0]}
    graph = await LadybugGraph.open(demo_graph)
    try:
        session = graph.session()
        try:
            rows = await session.read(
                "MATCH (u:User)-[:WROTE]->(p:Post)-[:PUBLISHED_IN]->(b:Publication) "
                "WHERE p.id IN $ids RETURN p.id AS id, p.title AS title, p.url AS url, "
                "p.claps AS claps, p.published_at AS at, p.tags AS tags, "
                "p.publication AS publication, b.name AS published_in, "
                "p.author AS author, u.id AS wrote",
                {"ids": sorted(posts)},
            )
        finally:
            session.close()
    finally:
        await graph.aclose()

    assert sorted(row["id"] for row in rows) == sorted(posts)
    for row in rows:
        story = posts[row["id"]]
        assert (row["title"], row["url"], row["claps"], row["at"]) == (
            story.title, story.url, story.claps, story.published_at
        )  # fmt: skip
        assert row["publication"] == row["published_in"] == story.publication
        assert row["tags"] == [REDDIT_TOPIC]
        assert row["author"] == row["wrote"]
        assert row["author"].isdigit()  # a Slashdot user (the SYNTHETIC mapping)
    assert len({row["author"] for row in rows}) == 68


@pytest.mark.slow
async def test_the_busiest_replayed_thread_is_a_real_post(demo_graph: Path, data_dir: Path) -> None:
    """posts.get answers the busiest thread's post with its title and subreddit, and
    comments.add accepts user 0's comment on it (it checks the user and the post exist)."""
    (thread,) = busiest_threads(read_comments(data_dir / "reddit_comments_au_2025.csv"), 1)
    assert thread == "1rt3kyh"
    with trio.fail_after(60):
        async with serving(demo_graph.parent) as server, open_client(server.url) as client:
            post = await rpc(client, "posts.get", {"post": thread})
            added = await rpc(
                client, "comments.add", {"user": "0", "post": thread, "text": "from the test"}
            )
            with pytest.raises(RpcError) as unknown:
                await rpc(client, "comments.add", {"user": "0", "post": "1zzzzzz", "text": "x"})
    assert post["id"] == thread
    assert post["title"] == "I'm an Australian Wholesale Fuel Trader - AMA"
    assert post["publication"] == "r/australia"
    assert post["claps"] == 3056
    assert added["channel"] == f"post:{thread}"
    assert unknown.value.code == -32004
