"""The documentation against the code: every method, flag, environment variable,
metric, link and diagram the docs must name is checked here.

Fast and self-contained: no services, no server; the code is read by importing
it (the JSON-RPC dispatcher, the click commands, the Prometheus registry) or,
for environment variables, by scanning the sources.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ENV_VAR = re.compile(r"STARLING_[A-Z][A-Z0-9_]*[A-Z0-9]")
TWO_PROCESSES = "## Two processes on one Redis and one Neo4j"


def read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def prose_lines(text: str) -> Iterator[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def mermaid_blocks(text: str) -> list[str]:
    """The bodies of the ```mermaid blocks of a Markdown text."""
    return re.findall(r"^```mermaid\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole ``## …`` line) up to the next heading of its level."""
    level = heading.split()[0]
    lines = text.splitlines()
    start = lines.index(heading)
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i].startswith(level + " ") and not lines[i].startswith(level + "#")
        ),
        len(lines),
    )
    return "\n".join(lines[start + 1 : end])


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def all_commands(group: click.Group) -> Iterator[click.Command]:
    for command in group.commands.values():
        yield command
        if isinstance(command, click.Group):
            yield from all_commands(command)


def registered_methods() -> list[str]:
    """The method names of the real ``POST /rpc`` dispatcher (built, never run)."""
    from actors.runtime import Actor
    from protocols.methods import Services, build_dispatcher
    from supervisor import SupervisorStatistics

    def tree() -> SupervisorStatistics:
        raise AssertionError("not called while building the dispatcher")

    services = Services(tree=tree, social=Actor[object]("social").ref)
    return sorted(build_dispatcher(services).methods)


def exported_metrics() -> set[str]:
    """The metric family names ``GET /metrics`` exports, read from a real registry."""
    from actors.feeds import FeedCounters
    from actors.realtime.pipeline import RealtimeStatistics
    from observability.metrics import Metrics, RealtimeCollector
    from supervisor import SupervisorStatistics

    root = SupervisorStatistics("root", "running", "one_for_one", 3, 30.0, 0, 0, None, ())
    realtime = RealtimeStatistics(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {"p50": 0.0})
    metrics = Metrics(
        lambda: root, FeedCounters(), RealtimeCollector(lambda: realtime, lambda: (0, 0))
    )
    metrics.observe_call("social.counts", 0.001, "ok")
    metrics.http_rejected.labels("forbidden").inc()
    return {family.name for family in metrics.registry.collect()}


def source_env_vars() -> set[str]:
    """``STARLING_*`` names in the code, the scripts and the Makefile (this file excluded)."""
    skip = {".venv", "starling.egg-info", "target", "node_modules", ".git"}
    names: set[str] = set()
    for path in ROOT.rglob("*"):
        if skip & set(path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix in {".py", ".sh"} or path.name == "Makefile":
            if path == Path(__file__).resolve():
                continue
            names |= set(ENV_VAR.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def test_every_rpc_method_is_documented() -> None:
    """Every method ``build_dispatcher`` registers has its own heading in docs/api.md."""
    api = read("api.md")
    headings = {line.strip() for line in prose_lines(api) if line.startswith("#")}
    methods = registered_methods()
    assert len(methods) >= 20
    missing = [name for name in methods if f"#### `{name}`" not in headings]
    assert not missing, f"docs/api.md has no '#### `method`' heading for {missing}"


def test_every_rpc_method_has_a_curl_example() -> None:
    """Each method's section in docs/api.md carries a curl call of that method to /rpc."""
    api = read("api.md")
    for name in registered_methods():
        body = section(api, f"#### `{name}`")
        assert "curl -s -d '" in body, name
        assert f'"method":"{name}"' in body, name
        assert "http://127.0.0.1:8080/rpc" in body, name


def test_every_serve_flag_and_env_var_is_in_operations() -> None:
    """Every ``starling serve`` flag and every ``envvar=`` of any command is in operations.md."""
    from cli import main
    from cli.serve import serve_command

    operations = read("operations.md")
    flags = [opt for param in serve_command.params for opt in param.opts if opt.startswith("--")]
    assert "--consumer" in flags
    serve_table = section(operations, "### `starling serve` flags")
    missing = [flag for flag in flags if f"`{flag}`" not in serve_table]
    assert not missing, f"flags of `starling serve` missing from operations.md: {missing}"
    envvars = {
        name
        for command in all_commands(main)
        for param in command.params
        for name in ([param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ()))
    }
    assert "STARLING_API_KEY" in envvars
    missing = sorted(name for name in envvars if f"`{name}`" not in operations)
    assert not missing, f"envvars of the CLI missing from operations.md: {missing}"


def test_every_env_var_in_the_sources_is_in_operations() -> None:
    """Every STARLING_* variable the code, scripts or Makefile read is in operations.md."""
    from auth.tokens import SECRET_ENV

    operations = read("operations.md")
    names = source_env_vars() | {SECRET_ENV}
    expected = {
        "STARLING_SECRET", "STARLING_API_KEY", "STARLING_DATA_DIR", "STARLING_GRAPH_URL",
        "STARLING_REDIS_URL", "STARLING_NEO4J_USER", "STARLING_NEO4J_PASSWORD",
        "STARLING_FEED_WEIGHTS", "STARLING_SCORER_URL", "STARLING_CONSUMER",
        "STARLING_STREAM_MAX_LENGTH", "STARLING_TEST_NEO4J_URL", "STARLING_TEST_REDIS_URL",
        "STARLING_SCREENSHOTS",
    }  # fmt: skip
    assert expected <= names
    missing = sorted(name for name in names if f"`{name}`" not in operations)
    assert not missing, f"environment variables missing from operations.md: {missing}"


def test_every_metric_is_in_operations() -> None:
    """Every metric family /metrics exports is named in operations.md."""
    operations = read("operations.md")
    names = exported_metrics()
    assert {"starling_rpc_calls", "starling_healthy", "starling_ws_connections"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in operations)
    assert not missing, f"metrics missing from operations.md: {missing}"


@pytest.mark.parametrize(
    "page", [*PAGES, ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_relative_links_and_images_resolve(page: Path) -> None:
    """Every relative link or image of the page names a file that exists (and a heading
    that exists, when it points into a Markdown file)."""
    broken = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            path_part, _, fragment = target.partition("#")
            file = (page.parent / path_part).resolve() if path_part else page
            missing_anchor = fragment and file.suffix == ".md" and fragment not in anchors(file)
            if not file.exists() or missing_anchor:
                broken.append(target)
    assert not broken, f"{page.name}: broken relative links {broken}"


def test_architecture_draws_three_mermaid_diagrams() -> None:
    """architecture.md draws the supervision tree, the realtime path and the feed path as
    ```mermaid blocks, and shows the dashboard and demo screenshots."""
    from actors.feeds.registry import FeedEventRouter
    from actors.realtime.bridge import RealtimeBridge
    from actors.realtime.nozzle import Nozzle
    from actors.realtime.relay import Relay
    from actors.realtime.streams import GROUP, STREAM, TOPIC
    from observability.dashboard import DashboardReporter

    text = read("architecture.md")
    blocks = mermaid_blocks(text)
    tree = [b for b in blocks if "one_for_all" in b and "rest_for_one" in b]
    realtime = [b for b in blocks if STREAM in b and "XACK" in b]
    feed = [b for b in blocks if "feed.get" in b and "aggregate" in b]
    assert len(tree) == 1, "one supervision tree diagram expected"
    assert len(realtime) == 1, "one realtime path diagram expected"
    assert len(feed) == 1, "one feed path diagram expected"
    for block in blocks:
        first = block.strip().splitlines()[0]
        assert first.split()[0] in {"flowchart", "graph", "sequenceDiagram"}, first
    children = [
        "root", "stores", "social", "feeds", "realtime", "api", DashboardReporter.name,
        "graph", "cache", "graph_reader", "graph_writer", "story_index", "feed_builders",
        "feed_registry", FeedEventRouter.name, "publisher", Relay.name, "transformer",
        Nozzle.name, RealtimeBridge.name,
    ]  # fmt: skip
    missing = [name for name in children if name not in tree[0]]
    assert not missing, f"the tree diagram lacks {missing}"
    for step in ("validate", "enrich", "render", "Pub/Sub", TOPIC, GROUP, "reorder", "XACK"):
        assert step in realtime[0], step
    for step in ("registry", "single flight", "aggregate", "preprocess", "annotate", "rank",
                 "postprocess", "diversify", "cache", "validate"):  # fmt: skip
        assert step in feed[0], step
    assert "](images/dashboard.png)" in text
    assert "](images/demo.png)" in text


def test_operations_walks_through_two_processes() -> None:
    """operations.md has the two-process section: Redis, one load, two serves on one graph
    and one Redis with different ports and consumers, then tail on A and publish on B."""
    operations = read("operations.md")
    assert TWO_PROCESSES in operations.splitlines()
    steps = section(operations, TWO_PROCESSES)
    serves = re.findall(r"starling serve (.*?)(?:&|$)", steps.replace("\\\n", " "), re.M)
    assert len(serves) >= 2, "two `starling serve` commands expected"
    first, second = serves[:2]
    for shared in ("--graph-url bolt://", "--redis-url redis://"):
        assert shared in first
        assert shared in second
    ports = [re.findall(r"--port (\d+)", s) for s in (first, second)]
    consumers = [re.findall(r"--consumer (\S+)", s) for s in (first, second)]
    assert ports[0], "a --port on each"
    assert ports[1], "a --port on each"
    assert ports[0] != ports[1]
    assert consumers[0], "a --consumer on each"
    assert consumers[1], "a --consumer on each"
    assert consumers[0] != consumers[1]
    for needed in ("redis-server", "STARLING_SECRET", "starling load demo --graph-url",
                   "starling tail", "realtime.publish"):  # fmt: skip
        assert needed in steps, needed


def code_lines(text: str) -> Iterator[str]:
    """The lines of a Markdown text inside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced:
            yield line


def readme_commands() -> list[str]:
    """Every ``starling`` command line in the README's code blocks (comments and ``&`` cut)."""
    commands = []
    for line in code_lines((ROOT / "README.md").read_text(encoding="utf-8")):
        command = line.split("#", 1)[0].strip().removesuffix("&").strip()
        if re.match(r"^(\S*/)?starling\s", command):
            commands.append(command)
    return commands


def test_readme_commands_run_in_a_fresh_shell_and_parse() -> None:
    """Every starling command the README shows names the script by its path in the project
    (a fresh shell has no virtualenv on PATH) and parses: the command, its flags and its
    arguments, files included (click resolves them without running anything)."""
    import shlex

    import click

    from cli import main

    commands = readme_commands()
    assert len(commands) >= 4, commands
    for command in commands:
        words = shlex.split(command)
        assert words[0] == ".venv/bin/starling", command
        assert (ROOT / words[0]).parent.name == "bin"
        command: click.Command = main
        context = click.Context(main, info_name="starling")
        rest = words[1:]
        while isinstance(command, click.Group):  # the groups take no option but --help
            name, *rest = rest
            found = command.get_command(context, name)
            assert found is not None, command
            command, context = found, click.Context(found, info_name=name, parent=context)
        command.make_context(context.info_name, rest, parent=context.parent)  # parses
