"""Paired statistics of confirmation runs: per-example outcomes, standard errors and the gain's interval.

A run's metric is the mean of its per-example outcomes (1 where the example was right) over a fixed
evaluation split, so its standard error is binomial. A schedule and the uniform baseline confirmed
with the same seeds are compared *paired*: for every seed both saw the same examples in the same
order, so per example and seed the difference ``d[s, i] = x[s, i] - u[s, i]`` cancels how hard the
example is. The gain is the mean of ``d``. Read as a two-way layout, ``d = gain + a_i + b_s + e_si``
(an example effect, a seed effect, their interaction), its variance is

    var(gain) = σa²/n + σb²/S + σe²/(nS) = (MS_examples + MS_seeds - MS_residual) / (nS)

from the mean squares of the layout. A seed effect is kept only where the data show one
(MS_seeds > MS_residual); otherwise it is pooled into the residual, which already carries the seed-to-
seed variation of every single example, and the interval rests on the examples. The interval is a t
interval on Welch-Satterthwaite degrees of freedom: with few seeds and a real seed effect it widens
a lot, which is the honest answer (more seeds narrow it). With one seed the seed effect cannot be
measured and the interval covers test-set sampling only (the method says so). Runs without
per-example outcomes (rows stored before they were recorded) fall back to a paired t over seeds.

Outcomes travel as text: ``"<n>:<base64 of numpy.packbits>"`` (6,000 examples in about 1 kB). A
metric that is not a rate (a causal LM's ``eval_loss``) has a float per example, the example's own
value; those travel as ``"f32:<n>:<base64 of little-endian float32>"`` (at most ``MAX_FLOAT_EXAMPLES``,
so that a result stays within what the server stores) and pair the same way.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ranktune.search.errors import RanktuneError

MAX_EXAMPLES = 1_000_000
MAX_FLOAT_EXAMPLES = 30_000  # 160 kB of text: under the server's 200,000 characters per result
FLOAT_PREFIX = "f32:"
CONFIDENCE = 0.95
Method = Literal["seeds x examples", "examples (one seed)", "seeds", "none"]


class OutcomesError(RanktuneError):
    field = "outcomes"


def is_rate(outcomes: np.ndarray) -> bool:
    """Right-or-wrong outcomes (bool, or 0/1 integers) rather than a float value per example."""
    return np.asarray(outcomes).dtype.kind in "biu"


def encodable(outcomes: np.ndarray) -> bool:
    """Whether ``encode_outcomes`` takes these (float outcomes: at most ``MAX_FLOAT_EXAMPLES``)."""
    return is_rate(outcomes) or np.asarray(outcomes).size <= MAX_FLOAT_EXAMPLES


def encode_outcomes(outcomes: np.ndarray) -> str:
    """Per-example 0/1 outcomes as ``"<n>:<base64>"``, float ones as ``"f32:<n>:<base64>"``."""
    if not is_rate(outcomes):
        values = np.asarray(outcomes, dtype="<f4").ravel()
        if values.size > MAX_FLOAT_EXAMPLES:
            raise OutcomesError(f"outcomes: more than {MAX_FLOAT_EXAMPLES:,} float outcomes")
        return f"{FLOAT_PREFIX}{values.size}:{base64.b64encode(values.tobytes()).decode('ascii')}"
    bits = np.asarray(outcomes).astype(bool).ravel()
    return f"{bits.size}:{base64.b64encode(np.packbits(bits).tobytes()).decode('ascii')}"


def decode_outcomes(text: str) -> np.ndarray:
    """The array ``encode_outcomes`` wrote (bool, or float64 for floats); ``OutcomesError`` otherwise."""
    if text.startswith(FLOAT_PREFIX):
        return _decode_floats(text.removeprefix(FLOAT_PREFIX))
    count, sep, payload = text.partition(":")
    if not sep or not count.isdigit() or not 0 < int(count) <= MAX_EXAMPLES:
        raise OutcomesError(f"outcomes: expected '<examples>:<base64>' with 1 to {MAX_EXAMPLES:,} examples")
    n = int(count)
    try:
        packed = np.frombuffer(base64.b64decode(payload, validate=True), dtype=np.uint8)
    except (binascii.Error, ValueError) as e:
        raise OutcomesError(f"outcomes: not valid base64 ({e})") from e
    if packed.size != (n + 7) // 8:
        raise OutcomesError(f"outcomes: {packed.size} bytes cannot hold exactly {n} outcomes")
    return np.unpackbits(packed, count=n).astype(bool)


def _decode_floats(text: str) -> np.ndarray:
    count, sep, payload = text.partition(":")
    if not sep or not count.isdigit() or not 0 < int(count) <= MAX_FLOAT_EXAMPLES:
        raise OutcomesError(
            f"outcomes: expected 'f32:<examples>:<base64>' with 1 to {MAX_FLOAT_EXAMPLES:,} examples"
        )
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise OutcomesError(f"outcomes: not valid base64 ({e})") from e
    if len(raw) != 4 * int(count):
        raise OutcomesError(f"outcomes: {len(raw)} bytes cannot hold exactly {count} float32 values")
    values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if not np.isfinite(values).all():
        raise OutcomesError("outcomes: every float outcome must be finite")
    return values


def outcomes_se(outcomes: np.ndarray) -> float:
    """Standard error of the outcomes' mean: binomial for right-or-wrong outcomes, the sample
    standard deviation over sqrt(n) for float ones."""
    values = np.asarray(outcomes).ravel()
    if is_rate(values):
        return binomial_se(float(values.mean()), values.size)
    if values.size < 2:
        return math.nan
    return float(values.astype(float).std(ddof=1)) / math.sqrt(values.size)


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 else math.nan


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class PairedGain:
    """A schedule's gain over uniform (in the objective's units, sign: better is positive)."""

    gain: float
    se: float | None
    low: float | None
    high: float | None
    seeds: int
    examples: int | None
    method: Method

    @property
    def verdict(self) -> str:
        if self.low is None or self.high is None:
            return "no interval"
        if self.low > 0:
            return "significant gain"
        if self.high < 0:
            return "significantly worse"
        return "no significant difference"

    def to_json(self) -> dict[str, Any]:
        return {
            "gain": self.gain,
            "se": self.se,
            "ci": [self.low, self.high] if self.low is not None else None,
            "confidence": CONFIDENCE,
            "seeds": self.seeds,
            "examples": self.examples,
            "method": self.method,
            "significant": self.verdict in ("significant gain", "significantly worse"),
            "verdict": self.verdict,
        }


def _interval(
    gain: float, se: float, df: float, seeds: int, examples: int | None, method: Method
) -> PairedGain:
    if se == 0.0 or not math.isfinite(df) or df <= 0:
        return PairedGain(gain, se, gain, gain, seeds, examples, method)
    half = t_quantile(df) * se
    return PairedGain(gain, se, gain - half, gain + half, seeds, examples, method)


def _two_way(d: np.ndarray, count: int) -> PairedGain:
    """The gain's interval from the seeds × examples differences ``d`` (see the module doc)."""
    n = d.shape[1]
    gain = float(d.mean())
    if n < 2:
        return PairedGain(gain, None, None, None, count, n, "none")
    by_seed, by_example = d.mean(axis=1), d.mean(axis=0)
    ms_examples = count * float(by_example.var(ddof=1))
    if count == 1:
        return _interval(gain, math.sqrt(ms_examples / n), n - 1, 1, n, "examples (one seed)")
    ms_seeds = n * float(by_seed.var(ddof=1))
    residual = d - by_seed[:, None] - by_example[None, :] + gain
    ms_residual = float((residual**2).sum()) / ((count - 1) * (n - 1))
    examples_part = ms_examples / (n * count)
    seeds_part = max(ms_seeds - ms_residual, 0.0) / (n * count)
    se = math.sqrt(examples_part + seeds_part)
    denominator = examples_part**2 / (n - 1) + (seeds_part**2 / (count - 1) if seeds_part else 0.0)
    df = (examples_part + seeds_part) ** 2 / denominator if denominator > 0 else math.inf
    return _interval(gain, se, df, count, n, "seeds x examples")


def paired_gain(
    schedule: Mapping[int, tuple[float, np.ndarray | None]],
    uniform: Mapping[int, tuple[float, np.ndarray | None]],
    sign: float = 1.0,
) -> PairedGain | None:
    """The gain of ``schedule`` over ``uniform`` on the seeds both have: ``seed -> (objective,
    outcomes or None)``. ``sign`` is -1 for a minimized objective. None when no seed is shared."""
    seeds = sorted(set(schedule) & set(uniform))
    if not seeds:
        return None
    with_outcomes = [
        s for s in seeds
        if schedule[s][1] is not None and uniform[s][1] is not None
        and len(schedule[s][1]) == len(uniform[s][1])  # type: ignore[arg-type]
    ]  # fmt: skip
    if with_outcomes == seeds:
        d = sign * np.stack(
            [schedule[s][1].astype(float) - uniform[s][1].astype(float) for s in seeds]  # type: ignore[union-attr]
        )
        return _two_way(d, len(seeds))
    diffs = np.array([sign * (schedule[s][0] - uniform[s][0]) for s in seeds])
    if len(diffs) < 2:
        return PairedGain(float(diffs.mean()), None, None, None, len(diffs), None, "none")
    se = float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return _interval(float(diffs.mean()), se, len(diffs) - 1, len(diffs), None, "seeds")
