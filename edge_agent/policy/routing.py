"""Pure decisions of data residency: a prompt's data class, and where its answer may come from.

    detectors that fired (+ classifier score) -> data class       (classify_findings)
    data class + what is wrong locally + usable upstreams -> route (decide_route)

Local first: a request goes upstream only when the box cannot answer it (queue full, not ready,
model not here) and its class allows the upstream's jurisdiction; a class that may not leave gets
a clear refusal instead, never a silent upstream call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_agent.config import BUILTIN_DETECTORS, DataClassRule, PolicyConfig

# Why the box cannot answer a request itself.
QUEUE_FULL = "queue_full"
NOT_READY = "not_ready"
UNKNOWN_MODEL = "unknown_model"
# Prompts given as token ids belong to this box's tokenizer: they mean nothing to another model.
TOKEN_PROMPT = "token_prompt"

LOCAL = "local"
UPSTREAM = "upstream"
REFUSED = "refused"

# The status a refusal answers with, by what was wrong locally.
_REFUSAL_STATUS = {QUEUE_FULL: 429, NOT_READY: 503, UNKNOWN_MODEL: 404}
_LOCAL_PROBLEM_WORDS = {
    QUEUE_FULL: "this box's queue is full",
    NOT_READY: "this box's model is not ready",
    UNKNOWN_MODEL: "this box does not serve the model asked for",
}


@dataclass(frozen=True)
class DataClassPolicy:
    """The policy config in the shape decisions need: class rules by name, in sensitivity order."""

    rules: tuple[DataClassRule, ...]
    default_class: str
    detector_classes: Mapping[str, str]  # detector name -> data class, for built-in and custom detectors
    classifier_threshold: float
    classifier_class: str

    @classmethod
    def from_config(cls, p: PolicyConfig) -> DataClassPolicy:
        detector_classes = {
            name: getattr(p.detectors, name) for name in BUILTIN_DETECTORS if getattr(p.detectors, name)
        }
        detector_classes.update({d.name: d.data_class for d in p.custom})
        return cls(p.classes, p.default_class, detector_classes, p.classifier_threshold, p.classifier_class)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    def rule(self, data_class: str) -> DataClassRule:
        return next(r for r in self.rules if r.name == data_class)

    def rank(self, data_class: str) -> int:
        return self.class_names.index(data_class)


@dataclass(frozen=True)
class Classification:
    data_class: str
    # What raised the class above the default, sorted: detector names, and "classifier" when its score did.
    detectors: tuple[str, ...]


def classify_findings(
    policy: DataClassPolicy, fired: set[str], classifier_score: float | None = None
) -> Classification:
    """The most sensitive class any fired detector (or the classifier's score) gives, else the default."""
    found = set(fired)
    if classifier_score is not None and classifier_score >= policy.classifier_threshold:
        found.add("classifier")
    data_class = policy.default_class
    for name in found:
        candidate = policy.classifier_class if name == "classifier" else policy.detector_classes.get(name)
        if candidate and policy.rank(candidate) > policy.rank(data_class):
            data_class = candidate
    return Classification(data_class, tuple(sorted(found)))


def problem_words(local_problem: str | None) -> str:
    return _LOCAL_PROBLEM_WORDS.get(local_problem or "", "this box cannot answer")


def may_leave(rule: DataClassRule) -> bool:
    return bool(rule.jurisdictions)


def jurisdiction_allowed(rule: DataClassRule, jurisdiction: str) -> bool:
    return "*" in rule.jurisdictions or (bool(jurisdiction) and jurisdiction in rule.jurisdictions)


@dataclass(frozen=True)
class RouteDecision:
    # LOCAL | UPSTREAM | REFUSED
    route: str
    # Machine words for the audit and metrics.
    reason: str
    # For UPSTREAM: the ones to try, in order.
    upstreams: tuple[str, ...] = ()
    # For REFUSED: the HTTP status, what the client is told, and the error code: what was wrong locally
    # (queue_full, ...), which is what a client acts on.
    status: int = 200
    message: str = ""
    code: str = ""


def decide_route(rule: DataClassRule, local_problem: str | None, candidates: Sequence[str]) -> RouteDecision:
    """Where a request of class `rule` goes, given what is wrong locally (None: nothing) and the upstreams
    that allow its class's jurisdictions and are up now, in priority order."""
    if local_problem is None:
        return RouteDecision(LOCAL, LOCAL)
    if local_problem == NOT_READY and not (may_leave(rule) and candidates):
        # Warming up is brief: waiting in the local queue beats a refusal when nothing else may answer.
        return RouteDecision(LOCAL, "waits_for_warm_up")
    status = _REFUSAL_STATUS.get(local_problem, 503)
    if local_problem == TOKEN_PROMPT:
        return RouteDecision(
            REFUSED,
            local_problem,
            status=429,
            message=(
                "this box's queue is full, and a prompt given as token ids is answered only by "
                "the model whose tokenizer made them; retry later"
            ),
            code=local_problem,
        )
    problem = problem_words(local_problem)
    if not may_leave(rule):
        return RouteDecision(
            REFUSED,
            local_problem,
            status=status,
            message=(
                f"{problem}, and data of class '{rule.name}' never leaves this box; "
                + ("retry later" if status != 404 else "ask for a model this box serves")
            ),
            code=local_problem,
        )
    if not candidates:
        where = "any upstream" if "*" in rule.jurisdictions else f"upstreams in {', '.join(rule.jurisdictions)}"
        return RouteDecision(
            REFUSED,
            "no_upstream_available",
            status=status,
            message=f"{problem}, and no upstream that data of class '{rule.name}' may go to ({where}) is available now",
            code=local_problem,
        )
    return RouteDecision(UPSTREAM, local_problem, upstreams=tuple(candidates))
