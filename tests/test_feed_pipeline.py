"""The feed pipeline's pure parts: catalog, providers, filters, features, diversification, scorers.

Expected values are written out by hand or computed with plain Python sets
and loops over the same input, never with the vectorized code under test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.feeds import (
    FEATURES,
    Catalog,
    LinearScorer,
    PipelineParams,
    ScorerConfigError,
    StoryRecord,
    UserContext,
    aggregate,
    annotate,
    best_first,
    diversify,
    gather_rows,
    preprocess,
    trending,
    url_key,
)
from actors.feeds.pipeline import AUTHOR, FRIENDS, PUBLICATION, TOPIC, TRENDING, Candidates

NOW = 1_700_000_000.0
DAY = 86_400


def story(
    id: str, author: str, *, age_days: float = 1, tags: tuple[str, ...] = (), **kw: object
) -> StoryRecord:
    return StoryRecord(id, author, int(NOW - age_days * DAY), tags, **kw)  # type: ignore[arg-type]


def small_catalog() -> Catalog:
    catalog = Catalog()
    catalog.add_stories(
        [
            story("s0", "alice", tags=("ml", "python")),
            story("s1", "alice", tags=("cooking",), url="https://a.com/x"),
            story("s2", "bob", publication="Towards", url="http://www.a.com/x/"),
            story("s3", "carol", tags=("python",), claps=500),
            story("s4", "me"),
            story("s5", "dave", age_days=400),
            story("s6", "eve", tags=("ml",)),
        ]
    )
    catalog.load_recommendations([("bob", "s3"), ("carol", "s6"), ("bob", "s6"), ("x", "s5")])
    return catalog


def context_for(catalog: Catalog, **names: list[str]) -> UserContext:
    view = catalog.view()
    return UserContext.resolve(
        view,
        "me",
        following=names.get("following", []),
        topics=names.get("topics", []),
        publications=names.get("publications", []),
        muted=names.get("muted", []),
        read=names.get("read", []),
    )


def ids(catalog: Catalog, candidates: Candidates) -> list[str]:
    view = catalog.view()
    return [view.post_ids[s] for s in candidates.stories.tolist()]


def test_gather_rows_matches_a_python_loop() -> None:
    """The vectorized CSR gather equals concatenating the rows one by one."""
    offsets = np.array([0, 2, 2, 5, 6], np.int64)
    values = np.array([10, 11, 20, 21, 22, 30], np.int32)
    rows = np.array([3, 0, 1, 2, 0], np.int64)
    expected = [v for r in rows for v in values[offsets[r] : offsets[r + 1]]]
    assert gather_rows(offsets, values, rows).tolist() == expected
    assert gather_rows(offsets, values, np.array([], np.int64)).tolist() == []


def test_url_keys_ignore_scheme_www_case_and_trailing_slash() -> None:
    """Two spellings of one URL share a key; no URL is key 0."""
    assert url_key("https://a.com/x") == url_key("http://www.A.com/x/") != 0
    assert url_key("https://a.com/y") != url_key("https://a.com/x")
    assert url_key(None) == url_key("") == 0


def test_aggregate_remembers_every_provider_of_a_candidate() -> None:
    """Followed authors, publications, topics and friends' recommendations are merged per story."""
    catalog = small_catalog()
    context = context_for(
        catalog, following=["alice", "bob"], topics=["python"], publications=["Towards"]
    )
    found = aggregate(catalog.view(), context, np.array([3], np.int64))
    got = dict(zip(ids(catalog, found), found.providers.tolist(), strict=True))
    assert got == {
        "s0": AUTHOR | TOPIC,
        "s1": AUTHOR,
        "s2": AUTHOR | PUBLICATION,
        "s3": TOPIC | FRIENDS | TRENDING,
        "s6": FRIENDS,
    }
    friends = dict(zip(ids(catalog, found), found.friends.tolist(), strict=True))
    assert friends["s3"] == 1
    assert friends["s6"] == 1
    assert friends["s0"] == 0


def test_recommendations_follow_events_and_compaction() -> None:
    """Edges added and withdrawn after loading count in the friends provider like a set model."""
    catalog = small_catalog()
    assert catalog.recommend("alice", "s6") is True
    assert catalog.recommend("alice", "s6") is False
    assert catalog.unrecommend("bob", "s6") is True
    assert catalog.unrecommend("bob", "s6") is False
    assert catalog.recommend("bob", "s6") is True  # withdrawn, then given again
    assert catalog.recommend("nobody", "missing") is False
    view = catalog.view()
    friends = np.array([view.user_index["alice"], view.user_index["bob"]], np.int32)
    counts = view.friends_recommendations(friends)
    assert counts[view.post_index["s6"]] == 2
    assert counts[view.post_index["s3"]] == 1
    assert view.recommendations[view.post_index["s6"]] == 3  # carol, bob, alice


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 9)), min_size=0, max_size=80
    )
)
def test_friend_counts_equal_a_set_model(operations: list[tuple[bool, int, int]]) -> None:
    """Any sequence of recommend/unrecommend gives the counts of a plain set of edges."""
    catalog = Catalog()
    catalog.add_stories([story(f"p{i}", "author") for i in range(10)])
    catalog.load_recommendations([("u0", "p0"), ("u1", "p0"), ("u2", "p5")])
    model = {("u0", "p0"), ("u1", "p0"), ("u2", "p5")}
    for add, user, post in operations:
        edge = (f"u{user}", f"p{post}")
        if add:
            assert catalog.recommend(*edge) == (edge not in model)
            model.add(edge)
        else:
            assert catalog.unrecommend(*edge) == (edge in model)
            model.discard(edge)
    view = catalog.view()
    followed = ["u0", "u2", "u4"]
    rows = np.array([view.user_index[u] for u in followed if u in view.user_index], np.int32)
    counts = view.friends_recommendations(rows)
    for i in range(10):
        expected = sum((u, f"p{i}") in model for u in followed)
        assert counts[view.post_index[f"p{i}"]] == expected
        total = sum(p == f"p{i}" for _, p in model)
        assert view.recommendations[view.post_index[f"p{i}"]] == total


def test_preprocess_drops_read_own_muted_old_and_deleted() -> None:
    """The filters remove exactly the read, own, muted-author, too-old and deleted stories."""
    catalog = small_catalog()
    catalog.delete("s6")
    context = context_for(
        catalog, following=["alice", "bob", "me", "dave", "carol"], muted=["carol"], read=["s1"]
    )
    view = catalog.view()
    found = aggregate(view, context, np.zeros(0, np.int64))
    params = PipelineParams(horizon_seconds=365 * DAY)
    kept = preprocess(view, context, found, NOW, params)
    assert ids(catalog, found) == ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]
    assert ids(catalog, kept) == ["s0", "s2"]


def test_annotate_fills_the_documented_features() -> None:
    """Each feature column holds what FEATURES documents, for a hand-checked story."""
    catalog = small_catalog()
    context = context_for(catalog, following=["bob"], topics=["python"])
    view = catalog.view()
    found = aggregate(view, context, np.array([view.post_index["s3"]], np.int64))
    features = annotate(view, found, NOW)
    row = ids(catalog, found).index("s3")
    got = dict(zip(FEATURES, features[row].tolist(), strict=True))
    assert got["log_age_hours"] == pytest.approx(np.log1p(24))
    assert got["log_engagement"] == pytest.approx(np.log1p(500 + 1))
    assert got["author_followed"] == 0
    assert got["publication_followed"] == 0
    assert got["log_friends"] == pytest.approx(np.log1p(1))
    assert got["topic_overlap"] == 1
    assert got["trending"] == 1


def test_trending_prefers_recent_engagement_and_skips_deleted() -> None:
    """Trending ranks by engagement decayed with age, ignores stories without any, and deleted."""
    catalog = Catalog()
    catalog.add_stories(
        [
            story("old-hit", "a", age_days=30, claps=10_000),
            story("new-hit", "a", age_days=0.1, claps=100),
            story("new-quiet", "a", age_days=0.1, claps=0),
            story("gone", "a", age_days=0.1, claps=5_000),
        ]
    )
    catalog.delete("gone")
    view = catalog.view()
    best = trending(view, NOW, PipelineParams(trending_count=3))
    assert [view.post_ids[s] for s in best.tolist()] == ["new-hit", "old-hit"]


def test_best_first_orders_by_score_then_position() -> None:
    """The top positions come best first; equal scores keep their input order."""
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9], np.float32)
    assert best_first(scores, 3).tolist() == [1, 4, 0]
    assert best_first(scores, 10).tolist() == [1, 4, 0, 2, 3]


def diversify_plain(
    authors: list[int], publications: list[int], urls: list[int], k: int, w: int, size: int
) -> list[int]:
    """Reference: the same greedy rule written as a plain loop over a Python list."""
    placed: list[int] = []
    remaining = list(range(len(authors)))
    seen: set[int] = set()
    while len(placed) < size:
        recent = placed[-(w - 1) :] if w > 1 else []
        chosen = None
        for i in remaining:
            if urls[i] and urls[i] in seen:
                continue
            same_author = sum(authors[j] == authors[i] for j in recent)
            same_pub = sum(publications[j] == publications[i] for j in recent)
            if same_author < k and (publications[i] < 0 or same_pub < k):
                chosen = i
                break
        if chosen is None:
            break
        placed.append(chosen)
        remaining.remove(chosen)
        if urls[chosen]:
            seen.add(urls[chosen])
            remaining = [i for i in remaining if urls[i] != urls[chosen]]
    return placed


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(-1, 2), st.integers(0, 6)),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 3),
    st.integers(3, 8),
)
def test_diversify_keeps_the_window_rule_and_matches_the_greedy_reference(
    rows: list[tuple[int, int, int]], k: int, w: int
) -> None:
    """No author or publication exceeds k in any window of w, and the order is the greedy one."""
    catalog = Catalog()
    catalog.add_columns(
        ids=[f"p{i}" for i in range(len(rows))],
        authors=[f"a{a}" for a, _, _ in rows],
        published_at=np.full(len(rows), int(NOW)),
        tags=[() for _ in rows],
        publications=[None if p < 0 else f"pub{p}" for _, p, _ in rows],
        reading_time=np.zeros(len(rows)),
        claps=np.zeros(len(rows)),
        url_keys=np.array([u for _, _, u in rows]),
    )
    view = catalog.view()
    n = len(rows)
    candidates = Candidates(
        np.arange(n, dtype=np.int64),
        np.ones(n, np.uint8),
        np.zeros(n, np.int32),
        np.zeros(n, np.int16),
    )
    order = np.arange(n, dtype=np.int64)  # already best first
    params = PipelineParams(diversity_max=k, diversity_window=w, feed_size=n)
    placed = diversify(view, candidates, order, params)
    authors = view.author.tolist()
    publications = view.publication.tolist()
    urls = view.url_key.tolist()
    for start in range(len(placed)):
        window = placed[start : start + w]
        assert max(Counter(authors[i] for i in window).values()) <= k
        pubs = Counter(publications[i] for i in window if publications[i] >= 0)
        assert not pubs or max(pubs.values()) <= k
    assert len({urls[i] for i in placed if urls[i]}) == sum(1 for i in placed if urls[i])
    assert placed == diversify_plain(authors, publications, urls, k, w, n)


def test_default_weights_load_and_score_in_the_unit_interval() -> None:
    """The packaged logistic model scores a followed author's fresh story above a stranger's."""
    scorer = LinearScorer.from_file()
    assert scorer.logistic
    assert scorer.weights.shape == (len(FEATURES),)
    features = np.zeros((2, len(FEATURES)), np.float32)
    features[0, FEATURES.index("author_followed")] = 1
    scores = scorer.score(features)
    assert 0 < scores[1] < scores[0] < 1
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-(scorer.bias + scorer.weights[3]))))


def test_weights_files_are_checked(tmp_path: Path) -> None:
    """A linear model is read as written; unknown features, models and non-numbers are refused."""
    good = tmp_path / "good.toml"
    good.write_text('model = "linear"\nbias = 1.5\n[weights]\ntrending = 2.0\n')
    scorer = LinearScorer.from_file(good)
    features = np.zeros((1, len(FEATURES)), np.float32)
    features[0, FEATURES.index("trending")] = 1
    assert scorer.score(features).tolist() == [3.5]
    for text, message in [
        ("[weights]\nclicks = 1.0\n", "unknown features"),
        ('model = "forest"\n', "model must be"),
        ('[weights]\ntrending = "high"\n', "must be numbers"),
        ("not toml at all = = \n", "cannot read"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ScorerConfigError, match=message):
            LinearScorer.from_file(bad)
    with pytest.raises(ScorerConfigError, match="cannot read"):
        LinearScorer.from_file(tmp_path / "missing.toml")
