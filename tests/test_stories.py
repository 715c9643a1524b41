"""Story readers (canonical, Hacker News, Medium, Reddit) and the story import on every backend.

Reader cases use small inline files written as bytes, so line endings and
encodings are exactly what the test says; the real files are read once each
(``slow``). The import runs on a fresh Ladybug database and on the shared Neo4j
server, where every id, tag and publication carries a uuid prefix.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from datasets.importers import MalformedInput
from datasets.stories import (
    REDDIT_TOPIC,
    Story,
    read_canonical,
    read_hn,
    read_medium,
    read_reddit,
    read_stories,
)
from datasets.story_import import StoryImport, import_stories
from stores.graph import GraphStore, ImportSummary
from stores.ladybug import LadybugGraph
from stores.neo4j import Neo4jGraph

Keys = Callable[[str], str]


def write(tmp_path: Path, data: bytes, name: str = "stories.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- canonical ---------------------------------------------------------------------

CANONICAL = (
    b"id,author,title,tags,publication,published_at,reading_time,claps,url\r\n"  # 1
    b'p1,alice,"Two\r\nlines, ""quoted""",graphs| trio |graphs,Weekly,2020-01-03,4.5,7,'
    b"https://x.example/1\r\n"  # 2-3
    b"p2,bob,,,,,,,\r\n"  # 4
    b"p3,alice,Zulu,,,2020-01-03T10:00:00+02:00,,,\r\n"  # 5
    b"p4,alice,Naive,,,2020-01-03 10:00,,,\r\n"  # 6
    b"p5,alice,Epoch,,,-86400,,,\r\n"  # 7
    b"\r\n"  # 8: blank, not a row
    b"p6,alice,Bad date,,,03/01/2020,,,\r\n"  # 9
    b",alice,Missing id,,,,,,\r\n"  # 10
    b"bad id!,alice,Bad id,,,,,,\r\n"  # 11
    b"p1,carol,Duplicate,,,,,,\r\n"  # 12
    b"p7,alice,Bad claps,,,,,-3,\r\n"  # 13
    b"p8,alice,Too few fields\r\n"  # 14
    b"p9,alice,Mojibake \xc3\x83\xc2\xa9,,,,NaN,,\r\n"  # 15
    b"p10,alice,Broken \xff byte,,,,,,\r\n"  # 16
    b"p11,alice,Ok,,,,,,\n"  # 17 (LF only)
)


def test_canonical_reads_every_field_and_counts_what_it_skips(tmp_path: Path) -> None:
    """Canonical CSV: fields, tags, dates, CRLF and multi-line values are read; bad rows counted."""
    stories, report = read_canonical(write(tmp_path, CANONICAL))

    assert stories == [
        Story(
            id="p1",
            author="alice",
            title='Two\r\nlines, "quoted"',
            url="https://x.example/1",
            tags=("graphs", "trio"),
            publication="Weekly",
            published_at=1578009600,
            reading_time=4.5,
            claps=7,
        ),
        Story(id="p2", author="bob", title=""),
        Story(id="p3", author="alice", title="Zulu", published_at=1578038400),
        Story(id="p4", author="alice", title="Naive", published_at=1578045600),
        Story(id="p5", author="alice", title="Epoch", published_at=-86400),
        Story(id="p11", author="alice", title="Ok"),
    ]
    assert (report.rows, report.kept, report.duplicates, report.malformed) == (14, 6, 1, 7)
    lines = [line for line, _ in report.examples]
    assert lines == [9, 10, 11, 13, 14, 15, 16]
    reasons = dict(report.examples)
    assert "published_at" in reasons[9]
    assert "id must be" in reasons[10]
    assert "id must be" in reasons[11]
    assert "claps" in reasons[13]
    assert "expected 9 fields, got 3" in reasons[14]
    assert "reading_time" in reasons[15]
    assert "UTF-8" in reasons[16]


def test_canonical_keeps_mojibake_as_is(tmp_path: Path) -> None:
    """Upstream mojibake that is valid UTF-8 is kept exactly as the file spells it."""
    data = (
        b"id,author,title,tags,publication,published_at,reading_time,claps\n"
        b"m,a,Caf\xc3\x83\xc2\xa9,,,,,\n"
    )

    stories, _ = read_canonical(write(tmp_path, data))

    assert stories[0].title == "CafÃ©"


def test_strict_raises_at_the_first_malformed_record(tmp_path: Path) -> None:
    """With strict=True the first malformed record raises MalformedInput with its first line."""
    with pytest.raises(MalformedInput, match=r"stories.csv:9: published_at") as caught:
        read_canonical(write(tmp_path, CANONICAL), strict=True)

    assert caught.value.line == 9


def test_a_header_without_a_required_column_always_raises(tmp_path: Path) -> None:
    """A missing header, or one lacking a required column, raises even without strict."""
    path = write(tmp_path, b"id,title,tags\nx,y,z\n")

    with pytest.raises(MalformedInput, match=r"stories.csv:1: header lacks .*author"):
        read_canonical(path)
    with pytest.raises(MalformedInput, match=r"empty.csv:1: no header"):
        read_hn(write(tmp_path, b"", "empty.csv"))


# -- Hacker News -------------------------------------------------------------------

HN = (
    b"id,title,url,num_points,num_comments,author,created_at\r\n"  # 1
    b"12224879,Interactive Dynamic Video,http://www.interactivedynamicvideo.com/,386,52,"
    b"ne0phyte,8/4/2016 11:52\r\n"  # 2: summer, EDT (UTC-4)
    b'10975351,"Ask HN: Two\r\nlines?",,39,10,josep2,1/26/2016 19:30\r\n'  # 3-4: winter, EST
    b"1,show hn: thing,https://GitHub.com/a/b,1,0,x_y,11/6/2016 1:30\r\n"  # 5: ambiguous hour
    b"2,Tell HN: bad date,,5,0,u,2016-08-04\r\n"  # 6
    b"abc,Bad id,,5,0,u,8/4/2016 11:52\r\n"  # 7
    b"3,Bad points,,many,0,u,8/4/2016 11:52\r\n"  # 8
    b"12224879,Duplicate,,1,0,u,8/4/2016 11:52\r\n"  # 9
    b"4,Ask HNs: not a kind,,2,0,bad name!,8/4/2016 11:52\r\n"  # 10
)


def test_hn_maps_ids_authors_times_tags_and_sites(tmp_path: Path) -> None:
    """HN rows: prefixed keys, UTC from US Eastern times, kind tags, site as publication."""
    stories, report = read_hn(write(tmp_path, HN))

    assert stories == [
        Story(
            id="hn:12224879",
            author="hn:ne0phyte",
            title="Interactive Dynamic Video",
            url="http://www.interactivedynamicvideo.com/",
            publication="interactivedynamicvideo.com",
            published_at=1470325920,  # 2016-08-04 15:52 UTC
            claps=386,
        ),
        Story(
            id="hn:10975351",
            author="hn:josep2",
            title="Ask HN: Two\r\nlines?",
            url="https://news.ycombinator.com/item?id=10975351",
            tags=("ask-hn",),
            published_at=1453854600,  # 2016-01-27 00:30 UTC
            claps=39,
        ),
        Story(
            id="hn:1",
            author="hn:x_y",
            title="show hn: thing",
            url="https://GitHub.com/a/b",
            tags=("show-hn",),
            publication="github.com",
            published_at=1478410200,  # the first 1:30 (EDT): 05:30 UTC
            claps=1,
        ),
    ]
    assert (report.rows, report.kept, report.duplicates, report.malformed) == (8, 3, 1, 4)
    assert [line for line, _ in report.examples] == [6, 7, 8, 10]
    assert report.notes == (("text posts: url is the HN item page, no publication", 1),)


# -- Medium ------------------------------------------------------------------------

TDS_MENU = (
    "\"['Data Science', 'Machine Learning', 'Programming', 'Visualization', 'Video', "
    "'\xe2\x98\x85', 'About', 'Contribute']\""
).encode("latin-1")

MEDIUM = (
    b"title,article_url,claps,reading_time,date,tag_list\n"  # 1
    b"Organizing,https://medium.com/@k3no/organizing-ca5445843368,1200,13,2020-01-03,"
    b"\"['Python', 'Data  Science', 'data science']\"\n"  # 2
    b"Vidhya,https://medium.com/analytics-vidhya/post-1,3,4,2020-02-01,\"['ML']\"\n"  # 3
    b"Trends,https://towardsdatascience.com/trends-4a17,3000,10,2020-01-03," + TDS_MENU + b"\n"
    b"Slug,https://medium.com/%E5%B0%8F%E8%94%A3%E7%9A%84%E8%B3%87%E6%96%99%E7%A7%91%E5%AD%B8"
    b"%E5%B0%8F%E5%A4%A9%E5%9C%B0/p-2,0,2,2020-03-01,[]\n"  # 5
    b"Again,https://medium.com/@k3no/organizing-ca5445843368,1,1,2020-01-04,[]\n"  # 6: dup URL
    b'Bad tags,https://medium.com/@x/p-3,1,1,2020-01-04,"[Python]"\n'  # 7
    b"Bad date,https://medium.com/@x/p-4,1,1,Jan 4,[]\n"  # 8
    b"Bad url,ftp://medium.com/@x/p-5,1,1,2020-01-04,[]\n"  # 9
)


def md(url: str) -> str:
    return "md:" + hashlib.sha1(url.encode()).hexdigest()[:12]


def test_medium_derives_ids_authors_publications_and_tags(tmp_path: Path) -> None:
    """Medium rows: hashed ids, @user or stand-in authors, normalized tags, the TDS menu dropped."""
    stories, report = read_medium(write(tmp_path, MEDIUM))

    slug = "小蔣的資料科學小天地"
    slug_url = (
        "https://medium.com/%E5%B0%8F%E8%94%A3%E7%9A%84%E8%B3%87%E6%96%99%E7%A7%91%E5%AD%B8"
        "%E5%B0%8F%E5%A4%A9%E5%9C%B0/p-2"
    )
    assert stories == [
        Story(
            id=md("https://medium.com/@k3no/organizing-ca5445843368"),
            author="md:@k3no",
            title="Organizing",
            url="https://medium.com/@k3no/organizing-ca5445843368",
            tags=("python", "data-science"),
            published_at=1578009600,
            reading_time=13.0,
            claps=1200,
        ),
        Story(
            id=md("https://medium.com/analytics-vidhya/post-1"),
            author="md:pub:analytics-vidhya",
            title="Vidhya",
            url="https://medium.com/analytics-vidhya/post-1",
            tags=("ml",),
            publication="analytics-vidhya",
            published_at=1580515200,
            reading_time=4.0,
            claps=3,
        ),
        Story(
            id=md("https://towardsdatascience.com/trends-4a17"),
            author="md:pub:towardsdatascience.com",
            title="Trends",
            url="https://towardsdatascience.com/trends-4a17",
            tags=("data-science",),
            publication="towardsdatascience.com",
            published_at=1578009600,
            reading_time=10.0,
            claps=3000,
        ),
        Story(
            id=md(slug_url),
            author="md:pub:" + hashlib.sha1(slug.encode()).hexdigest()[:12],
            title="Slug",
            url=slug_url,
            publication=slug,
            published_at=1583020800,
            reading_time=2.0,
            claps=0,
        ),
    ]
    assert (report.rows, report.kept, report.duplicates, report.malformed) == (8, 4, 1, 3)
    assert [line for line, _ in report.examples] == [7, 8, 9]
    assert dict(report.notes) == {
        "no named author: publication stand-in md:pub:<publication>": 3,
        "towardsdatascience.com menu scraped as tags: tags = (data-science,)": 1,
    }


@pytest.mark.slow
def test_real_hacker_news_file(data_dir: Path) -> None:
    """The real HN file: 20,100 rows, every one kept, none malformed."""
    stories, report = read_stories(data_dir / "hacker_news.csv", "hn", strict=True)

    assert (report.rows, report.kept, report.duplicates, report.malformed) == (20_100, 20_100, 0, 0)
    assert len({story.author for story in stories}) == 10_382
    assert sum(1 for story in stories if "ask-hn" in story.tags) > 1_700


@pytest.mark.slow
def test_real_medium_file(data_dir: Path) -> None:
    """The real Medium file: 16,049 rows, 10 duplicate URLs skipped, none malformed."""
    stories, report = read_stories(data_dir / "medium_articles_datascience_2020.csv", "medium")

    assert (report.rows, report.kept, report.duplicates, report.malformed) == (
        16_049,
        16_039,
        10,
        0,
    )
    assert all("data-science" in story.tags for story in stories)
    assert not any("contribute" in story.tags for story in stories)


# -- Reddit --------------------------------------------------------------------------

REDDIT = (
    b"id,title,text,author,score,upvote_ratio,num_comments,created_utc,subreddit,url,"
    b"permalink,date\n"  # 1
    b'1rt3kyh,"Fuel, an AMA","Two\n\nparagraphs",theta_bleeder,3056,0.97,716,1773445016.0,'
    b"australia,https://www.reddit.com/r/australia/comments/1rt3kyh/ama/,"
    b"/r/australia/comments/1rt3kyh/ama/,2026-03-13 23:36:56\n"  # 2-4
    b"1rc0jxv,Labor slams tariffs,,Sheep-1753,209,0.93,48,1771801271.9,AusFinance,"
    b"https://www.afr.com/labor,/r/AusFinance/comments/1rc0jxv/labor/,2026-02-22\n"  # 5
    b"1abc,Gone,,[deleted],-4,0.2,1,1750000000,ASX,,/r/ASX/comments/1abc/gone/,2025-06-15\n"  # 6
    b"1rt3kyh,Duplicate,,x,1,1,0,1773445016.0,australia,,/r/x/,2026-03-13\n"  # 7
    b"1bad,Bad score,,x,many,1,0,1750000000,ASX,,/r/x/,2025-06-15\n"  # 8
    b"1bad2,Bad time,,x,1,1,0,yesterday,ASX,,/r/x/,2025-06-15\n"  # 9
    b"bad id!,Bad id,,x,1,1,0,1750000000,ASX,,/r/x/,2025-06-15\n"  # 10
    b"1bad3,No subreddit,,x,1,1,0,1750000000,,,/r/x/,2025-06-15\n"  # 11
)


def test_reddit_keeps_ids_maps_authors_subreddits_and_scores(tmp_path: Path) -> None:
    """Reddit rows: the Reddit id as is, rd: authors or a subreddit stand-in, r/ publications,
    the data set's topic as the only tag, whole-second times, negative scores as 0 claps."""
    stories, report = read_reddit(write(tmp_path, REDDIT))

    assert stories == [
        Story(
            id="1rt3kyh",
            author="rd:theta_bleeder",
            title="Fuel, an AMA",
            url="https://www.reddit.com/r/australia/comments/1rt3kyh/ama/",
            tags=(REDDIT_TOPIC,),
            publication="r/australia",
            published_at=1773445016,
            claps=3056,
        ),
        Story(
            id="1rc0jxv",
            author="rd:Sheep-1753",
            title="Labor slams tariffs",
            url="https://www.afr.com/labor",
            tags=(REDDIT_TOPIC,),
            publication="r/AusFinance",
            published_at=1771801271,
            claps=209,
        ),
        Story(
            id="1abc",
            author="rd:sub:ASX",
            title="Gone",
            url="https://www.reddit.com/r/ASX/comments/1abc/gone/",
            tags=(REDDIT_TOPIC,),
            publication="r/ASX",
            published_at=1750000000,
            claps=0,
        ),
    ]
    assert REDDIT_TOPIC == "us-tariffs-2025"
    assert (report.rows, report.kept, report.duplicates, report.malformed) == (8, 3, 1, 4)
    assert [line for line, _ in report.examples] == [8, 9, 10, 11]
    assert dict(report.notes) == {
        "negative score: claps 0": 1,
        "no named author: subreddit stand-in rd:sub:<subreddit>": 1,
    }
    assert read_stories(write(tmp_path, REDDIT), "reddit") == (stories, report)


def test_real_reddit_posts_file(data_dir: Path) -> None:
    """The real Reddit posts file: 95 rows, 95 posts kept by 68 authors in 5 subreddits, no
    duplicate, none malformed, none without an author, the busiest thread's post among them."""
    stories, report = read_reddit(data_dir / "reddit_posts_au_2025.csv", strict=True)

    assert (report.rows, report.kept, report.duplicates, report.malformed) == (95, 95, 0, 0)
    assert report.notes == ()
    assert len({story.author for story in stories}) == 68
    assert {story.publication for story in stories} == {
        "r/australia", "r/AusFinance", "r/ASX_Bets", "r/AusEcon", "r/ASX"
    }  # fmt: skip
    assert all(story.tags == (REDDIT_TOPIC,) for story in stories)
    assert len({story.url for story in stories}) == 95
    (ama,) = [story for story in stories if story.id == "1rt3kyh"]
    assert (ama.title, ama.publication, ama.claps, ama.published_at) == (
        "I'm an Australian Wholesale Fuel Trader - AMA", "r/australia", 3056, 1773445016
    )  # fmt: skip


# -- import_stories on every backend ------------------------------------------------


@pytest.fixture(params=["ladybug", pytest.param("neo4j", marks=pytest.mark.neo4j)])
async def graph(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GraphStore]:
    """A fresh Ladybug database, or the session's Neo4j, with the schema ensured."""
    store: GraphStore
    if request.param == "ladybug":
        store = await LadybugGraph.open(tmp_path / "graph")
    else:
        store = await Neo4jGraph.open(request.getfixturevalue("neo4j_url"))
    try:
        await store.ensure_schema()
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def key() -> Keys:
    """Makes names unique to this test: ``key("x")`` → ``"<uuid>-x"``."""
    prefix = uuid.uuid4().hex
    return lambda name: f"{prefix}-{name}"


def sample(key: Keys) -> list[Story]:
    return [
        Story(
            id=key("s1"),
            author=key("alice"),
            title='A "title",\nwith a newline',
            url="https://x.example/1",
            tags=(key("graphs"), key("trio")),
            publication=key("Weekly"),
            published_at=1578009600,
            reading_time=4.5,
            claps=7,
        ),
        Story(id=key("s2"), author=key("bob"), title="", tags=(key("graphs"),)),
        Story(id=key("s3"), author=key("carol"), title="Mapped", publication=key("Weekly")),
    ]


async def rows(graph: GraphStore, cypher: str, key: Keys) -> list[tuple[str, ...]]:
    result = await graph.session().read(cypher, {"prefix": key("")})
    return sorted(tuple(row.values()) for row in result)


async def test_import_stories_writes_posts_and_their_relationships(
    graph: GraphStore, key: Keys
) -> None:
    """Posts get every property; WROTE (mapped authors), TAGGED, PUBLISHED_IN and missing users."""
    await graph.import_nodes("User", [key("42")])

    result = await import_stories(graph, sample(key), authors={key("carol"): key("42")})
    posts = await graph.session().read(
        "MATCH (p:Post) WHERE p.id STARTS WITH $prefix RETURN p ORDER BY p.id",
        {"prefix": key("")},
    )

    assert result == StoryImport(
        users=ImportSummary(2, 1),
        posts=ImportSummary(3, 0),
        topics=ImportSummary(2, 0),
        publications=ImportSummary(1, 0),
        wrote=ImportSummary(3, 0),
        tagged=ImportSummary(3, 0),
        published_in=ImportSummary(2, 0),
    )
    assert [row["p"] for row in posts] == [
        {
            "id": key("s1"),
            "author": key("alice"),
            "title": 'A "title",\nwith a newline',
            "url": "https://x.example/1",
            "tags": [key("graphs"), key("trio")],
            "publication": key("Weekly"),
            "published_at": 1578009600,
            "reading_time": 4.5,
            "claps": 7,
        },
        {"id": key("s2"), "author": key("bob"), "title": "", "tags": [key("graphs")], "claps": 0},
        {
            "id": key("s3"),
            "author": key("42"),
            "title": "Mapped",
            "tags": [],
            "publication": key("Weekly"),
            "claps": 0,
        },
    ]
    wrote = "MATCH (u:User)-[:WROTE]->(p:Post) WHERE p.id STARTS WITH $prefix RETURN u.id, p.id"
    assert await rows(graph, wrote, key) == sorted(
        [(key("alice"), key("s1")), (key("bob"), key("s2")), (key("42"), key("s3"))]
    )
    tagged = (
        "MATCH (p:Post)-[:TAGGED]->(t:Topic) WHERE p.id STARTS WITH $prefix RETURN p.id, t.name"
    )
    assert await rows(graph, tagged, key) == sorted(
        [(key("s1"), key("graphs")), (key("s1"), key("trio")), (key("s2"), key("graphs"))]
    )
    published = (
        "MATCH (p:Post)-[:PUBLISHED_IN]->(b:Publication) WHERE p.id STARTS WITH $prefix "
        "RETURN p.id, b.name"
    )
    assert await rows(graph, published, key) == [
        (key("s1"), key("Weekly")),
        (key("s3"), key("Weekly")),
    ]
    carol = await graph.session().read("MATCH (u:User {id: $id}) RETURN u.id", {"id": key("carol")})
    assert carol == []


async def test_import_stories_twice_changes_nothing(graph: GraphStore, key: Keys) -> None:
    """A second import of the same stories reports everything as already present."""
    await import_stories(graph, sample(key))

    again = await import_stories(graph, sample(key))

    assert again == StoryImport(
        users=ImportSummary(0, 3),
        posts=ImportSummary(0, 3),
        topics=ImportSummary(0, 2),
        publications=ImportSummary(0, 1),
        wrote=ImportSummary(0, 3),
        tagged=ImportSummary(0, 3),
        published_in=ImportSummary(0, 2),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tags": ("ok", "")}, "tags"),
        ({"author": "bad author!"}, "author"),
        ({"publication": ""}, "publication"),
        ({"claps": -1}, "claps"),
        ({"published_at": 2**63}, "INT64"),
        ({"id": "s1"}, "two stories"),
    ],
)
async def test_import_stories_checks_everything_before_writing(
    graph: GraphStore, key: Keys, change: dict[str, object], message: str
) -> None:
    """One invalid story among valid ones raises ValueError and nothing at all is written."""
    stories = sample(key)
    stories[2] = replace(stories[2], **{k: key(v) if k == "id" else v for k, v in change.items()})

    with pytest.raises(ValueError, match=message):
        await import_stories(graph, stories)
    written = [
        await graph.session().read(
            f"MATCH (n:{label}) WHERE n.{name} STARTS WITH $prefix RETURN count(n) AS n",
            {"prefix": key("")},
        )
        for label, name in (("User", "id"), ("Post", "id"), ("Topic", "name"))
    ]

    assert written == [[{"n": 0}]] * 3


async def test_import_stories_needs_the_mapped_user_ids_to_be_keys(
    graph: GraphStore, key: Keys
) -> None:
    """A mapping onto an empty user id is refused before anything is written."""
    with pytest.raises(ValueError, match="maps to"):
        await import_stories(graph, sample(key), authors={key("bob"): ""})
