"""Scorers: the *rank* step of the feed pipeline, features in, scores out.

- :class:`LinearScorer` (the default): a linear or logistic model in numpy,
  weights from a TOML file (``actors/feeds/weights.toml`` ships with Starling).
- :class:`RemoteScorer`: sends feature batches to a model service over HTTP
  JSON-RPC 2.0 and falls back to a local scorer when the service is slow,
  down or answers nonsense (Rex ranks with models that live outside the feed
  service; the fallback keeps feeds available when the model is not).

The remote protocol, one POST per batch of at most ``batch_rows`` rows::

    → {"jsonrpc": "2.0", "id": 1, "method": "score",
       "params": {"names": [feature names…], "features": [[f0, f1, …], …]}}
    ← {"jsonrpc": "2.0", "id": 1, "result": {"scores": [s0, s1, …]}}

Shapes: ``features: float32[n, len(FEATURES)]`` → ``scores: float32[n]``.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import msgspec
import numpy as np
import numpy.typing as npt
import structlog
import trio

from actors.feeds.pipeline import FEATURES
from actors.social.scatter import run_all

log = structlog.get_logger(__name__)

DEFAULT_REMOTE_TIMEOUT = 0.2
"""Seconds the remote scorer may take for one ranking, all batches together."""


class ScorerConfigError(ValueError):
    """A weights file that cannot be used (unreadable, unknown model or feature, bad number)."""


@dataclass(frozen=True, slots=True)
class LinearScorer:
    """``score = bias + features @ weights``, through a sigmoid when ``logistic``.

    Attributes:
        weights: one weight per feature of :data:`FEATURES`, ``float32[len(FEATURES)]``.
        bias: the intercept.
        logistic: apply the logistic function (scores in (0, 1)).
    """

    weights: npt.NDArray[np.float32]
    bias: float = 0.0
    logistic: bool = True

    @classmethod
    def from_file(cls, path: Path | None = None) -> LinearScorer:
        """Read a weights file (the packaged default when ``path`` is ``None``).

        Layout: ``model = "logistic" | "linear"``, ``bias = float``, and a
        ``[weights]`` table naming features of :data:`FEATURES` (missing ones
        weigh 0).

        Raises:
            ScorerConfigError: unreadable file, unknown model or feature, or a non-number.
        """
        try:
            if path is None:
                text = resources.files("actors.feeds").joinpath("weights.toml").read_text()
            else:
                text = path.read_text()
            config = tomllib.loads(text)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ScorerConfigError(f"cannot read feed weights {path}: {exc}") from exc
        model = config.get("model", "logistic")
        if model not in ("logistic", "linear"):
            raise ScorerConfigError(f"model must be 'logistic' or 'linear', got {model!r}")
        table = config.get("weights", {})
        unknown = sorted(set(table) - set(FEATURES))
        if unknown:
            raise ScorerConfigError(f"unknown features {unknown}; known: {list(FEATURES)}")
        values = [table.get(name, 0.0) for name in FEATURES]
        bias = config.get("bias", 0.0)
        if not all(isinstance(v, int | float) for v in [*values, bias]):
            raise ScorerConfigError("weights and bias must be numbers")
        return cls(np.asarray(values, np.float32), float(bias), model == "logistic")

    def score(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Score each row of ``features`` (``float32[n, len(FEATURES)]``) → ``float32[n]``."""
        z = features @ self.weights
        z += np.float32(self.bias)
        if self.logistic:
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += np.float32(1.0)
            np.reciprocal(z, out=z)
        return z.astype(np.float32, copy=False)


class _ScoreResult(msgspec.Struct):
    scores: list[float]


class _Response(msgspec.Struct):
    jsonrpc: str
    id: int | str | None = None
    result: _ScoreResult | None = None
    error: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class RemoteStatistics:
    """Counts of a :class:`RemoteScorer`: rankings scored remotely and fallbacks by reason."""

    remote: int
    fallbacks: dict[str, int]


class RemoteScorer:
    """Scores through a model service, with a deadline and a local fallback.

    When there are more than ``max_rows`` candidates, the local scorer picks
    the best ``max_rows`` and only those go to the service (a two-stage
    cascade); the others score ``-inf``, below every remote score.

    Args:
        url: the service's JSON-RPC endpoint (``http://host:port/path``).
        fallback: the local scorer used on any failure.
        timeout: seconds for one ranking, every batch included.
        batch_rows: rows per request; batches are sent concurrently.
        max_rows: most rows sent for one ranking.
        client: an ``httpx.AsyncClient`` to reuse (one is made otherwise).

    Raises:
        ValueError: a non-positive timeout, batch or row limit.
    """

    def __init__(
        self,
        url: str,
        fallback: LinearScorer,
        *,
        timeout: float = DEFAULT_REMOTE_TIMEOUT,
        batch_rows: int = 5_000,
        max_rows: int = 20_000,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if timeout <= 0 or batch_rows < 1 or max_rows < 1:
            raise ValueError("timeout, batch_rows and max_rows must be > 0")
        self.url = url
        self.fallback = fallback
        self.timeout = timeout
        self.batch_rows = batch_rows
        self.max_rows = max_rows
        self._client = client or httpx.AsyncClient()
        self._remote = 0
        self._fallbacks: dict[str, int] = {}

    async def score(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Score rows remotely; on timeout, transport error or a bad answer, score locally."""
        rows = np.arange(len(features))
        if len(features) > self.max_rows:
            local = self.fallback.score(features)
            rows = np.argpartition(-local, self.max_rows - 1)[: self.max_rows]
        try:
            with trio.fail_after(self.timeout):
                remote = await self._score_rows(features[rows])
        except trio.TooSlowError:
            return self._fall_back(features, "timeout")
        except httpx.HTTPError as exc:
            return self._fall_back(features, "transport", error=str(exc))
        except (msgspec.ValidationError, msgspec.DecodeError, _BadAnswer) as exc:
            return self._fall_back(features, "bad_answer", error=str(exc))
        self._remote += 1
        if len(rows) == len(features):
            return remote
        scores = np.full(len(features), -np.inf, np.float32)
        scores[rows] = remote
        return scores

    async def _score_rows(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        scores = np.empty(len(features), np.float32)
        starts = range(0, len(features), self.batch_rows)
        # one failed batch fails the ranking (and is raised as itself)
        await run_all(
            functools.partial(self._score_batch, features, start, number, scores)
            for number, start in enumerate(starts)
        )
        return scores

    async def _score_batch(
        self,
        features: npt.NDArray[np.float32],
        start: int,
        number: int,
        out: npt.NDArray[np.float32],
    ) -> None:
        batch = features[start : start + self.batch_rows]
        body = msgspec.json.encode(
            {
                "jsonrpc": "2.0",
                "id": number,
                "method": "score",
                "params": {"names": list(FEATURES), "features": batch.tolist()},
            }
        )
        response = await self._client.post(
            self.url, content=body, headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        answer = msgspec.json.decode(response.content, type=_Response)
        if answer.result is None:
            raise _BadAnswer(f"error from the model service: {answer.error}")
        if len(answer.result.scores) != len(batch):
            raise _BadAnswer(f"{len(answer.result.scores)} scores for {len(batch)} rows")
        out[start : start + len(batch)] = answer.result.scores

    def _fall_back(
        self, features: npt.NDArray[np.float32], reason: str, *, error: str | None = None
    ) -> npt.NDArray[np.float32]:
        self._fallbacks[reason] = self._fallbacks.get(reason, 0) + 1
        log.warning("remote scorer failed; using the local scorer", reason=reason, error=error)
        return self.fallback.score(features)

    def statistics(self) -> RemoteStatistics:
        """How many rankings were scored remotely and how many fell back, by reason."""
        return RemoteStatistics(self._remote, dict(self._fallbacks))

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


class _BadAnswer(Exception):
    pass
