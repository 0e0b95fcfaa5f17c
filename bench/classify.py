"""Prompt classification benchmark: recall, false positives and cost of the residency detectors, beside the
reference libraries on the same corpus, and the cost of the router's whole classification.

Systems:
  detectors   edge_agent.policy.detectors.Detectors(BUILTIN_DETECTORS, phone_regions=the default 12).find:
              the router's validated detectors on its canonical view of the text
  reference   the libraries a careful first version would call, per kind: phonenumbers.PhoneNumberMatcher
              (leniency VALID) in each of the 12 regions for phones; a card regex (digits with single spaces
              or dashes) checked by stdnum.luhn; an IBAN regex (any case, single spaces) checked by
              stdnum.iban and schwifty; a dashed SSN checked by stdnum.us.ssn; an email regex. On the text as
              written: no normalization.
  naive       one bare regex per detector, no validation (what validation removes)
  classify    PromptClassifier(PolicyConfig()).classify: every detector, then the ONNX model if given
  no_phone, phone_only   the detectors without phone numbers, and phone numbers alone (cost only)
  classifier  with --classifier MODEL.onnx: also featurize alone and SensitivityModel.score alone
  presidio    not a dependency; said whether installed, not measured

Corpus: tests/pii_corpus.py (seeded): Faker items in 12 locales in sentence templates, the evasion set
(transforms a reader reads through) and 1,500 benign number-heavy sentences. An item counts as found when
every letter and digit of it lies in a finding of its own kind (tests/unit/agent/test_residency_corpus.py judges
the same way); the false-positive rate is the share of benign sentences a kind fires on.

Cost: 2 KB prompts made by concatenating corpus sentences (about one PII sentence in four), each system
called on every prompt --repeat times after a warm-up; p50 and p99 microseconds per call. Also the fixed
prompts of earlier runs (2 KB prose with and without five PII items, 200 bytes) with --iterations calls.
Targets (issue 13): card, IBAN, SSN recall >= 99.5%; email >= 99%; phone >= 95%; benign false positives
<= 1% per kind; detectors p99 < 1 ms on a 2 KB prompt. Results: bench/results/classify.json. Usage:
    python bench/classify.py [--prompts 200] [--repeat 5] [--iterations 1000] [--classifier MODEL.onnx]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib.util
import os
import platform
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from results_file import RESULTS, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import phonenumbers  # noqa: E402
from stdnum import iban as stdnum_iban  # noqa: E402
from stdnum import luhn as stdnum_luhn  # noqa: E402
from stdnum.us import ssn as stdnum_ssn  # noqa: E402

import pii_corpus as corpus  # noqa: E402
from edge_agent.config import BUILTIN_DETECTORS, PolicyConfig  # noqa: E402
from edge_agent.policy.classify import PromptClassifier  # noqa: E402
from edge_agent.policy.detectors import Detectors  # noqa: E402

RECALL_TARGET = {"card": 0.995, "iban": 0.995, "us_ssn": 0.995, "email": 0.99, "phone": 0.95}
FALSE_POSITIVE_MAX = 0.01
TARGET_P99_US = 1000.0
PROMPT_BYTES = 2048


@dataclass(frozen=True)
class Found:
    detector: str
    start: int
    end: int


Finder = Callable[[str], Sequence[Found]]

# --- reference and naive systems ------------------------------------------------------------------------
NAIVE = {
    "email": re.compile(r"\S+@\S+\.\S+"),
    "phone": re.compile(r"\+?\d[\d\s().-]{6,}\d"),
    "card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
    "us_ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
}
_REF_EMAIL = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)+")
_REF_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){11,18}(?![\d-])")
_REF_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}")
_REF_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")


def naive_find(text: str) -> list[Found]:
    return [Found(kind, m.start(), m.end()) for kind, pattern in NAIVE.items() for m in pattern.finditer(text)]


def _iban_prefix(candidate: str) -> int:
    """How many characters of candidate make a valid IBAN (stdnum.iban, then schwifty), 0 if none."""
    compact_at = [i for i, c in enumerate(candidate) if c != " "]
    compact = candidate.replace(" ", "").upper()
    for length in range(len(compact), 14, -1):
        if stdnum_iban.is_valid(compact[:length]) and corpus.iban_valid(compact[:length]):
            return compact_at[length - 1] + 1
    return 0


def reference_finders(regions: Sequence[str]) -> dict[str, Finder]:
    def phone(text: str) -> list[Found]:
        spans = {(m.start, m.end) for region in regions for m in phonenumbers.PhoneNumberMatcher(text, region)}
        return [Found("phone", a, b) for a, b in sorted(spans)]

    def card(text: str) -> list[Found]:
        return [
            Found("card", m.start(), m.end())
            for m in _REF_CARD.finditer(text)
            if stdnum_luhn.is_valid(re.sub(r"\D", "", m.group(0)))
        ]

    def iban(text: str) -> list[Found]:
        out = []
        for m in _REF_IBAN.finditer(text):
            length = _iban_prefix(m.group(0))
            if length:
                out.append(Found("iban", m.start(), m.start() + length))
        return out

    def us_ssn(text: str) -> list[Found]:
        return [Found("us_ssn", m.start(), m.end()) for m in _REF_SSN.finditer(text) if stdnum_ssn.is_valid(m.group(0))]

    def email(text: str) -> list[Found]:
        return [Found("email", m.start(), m.end()) for m in _REF_EMAIL.finditer(text)]

    return {"phone": phone, "card": card, "iban": iban, "us_ssn": us_ssn, "email": email}


# --- quality ----------------------------------------------------------------------------------------------
def rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def quality(
    system: str,
    find_kind: Callable[[str, str], Sequence[Found]],
    samples: Sequence[corpus.Sample],
    benign: Sequence[corpus.Benign],
) -> dict:
    """Recall per kind, per kind and locale, per kind and transform; false-positive rate per kind."""
    hits: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for s in samples:
        ok = corpus.covered(s, find_kind(s.kind, s.text))
        for key in (
            (s.kind,),
            (s.kind, "locale", s.locale or "intl"),
            (s.kind, "variant", s.variant),
            (s.kind, "set", "plain" if s.variant == "plain" else "evasion"),
        ):
            hits[key][0] += ok
            hits[key][1] += 1
    fired: dict[str, int] = defaultdict(int)
    for kind in corpus.KINDS:
        fired[kind] = sum(1 for b in benign if find_kind(kind, b.text))
    out: dict = {
        "recall": {},
        "recall_by_locale": {},
        "recall_by_transform": {},
        "recall_by_set": {},
        "false_positive_rate": {},
        "benign_sentences": len(benign),
    }
    for key, (h, n) in sorted(hits.items()):
        kind = key[0]
        if len(key) == 1:
            out["recall"][kind] = {"recall": rate(h, n), "n": n, "missed": n - h}
        else:
            table = {"locale": "recall_by_locale", "variant": "recall_by_transform", "set": "recall_by_set"}[key[1]]
            out[table].setdefault(kind, {})[key[2]] = {"recall": rate(h, n), "n": n}
    for kind in corpus.KINDS:
        out["false_positive_rate"][kind] = rate(fired[kind], len(benign))
    print(f"  {system}: quality measured", flush=True)
    return out


def phone_misses_by_verdict(
    find_kind: Callable[[str, str], Sequence[Found]], samples: Sequence[corpus.Sample]
) -> dict[str, dict[str, int]]:
    """The phone numbers missed, by what libphonenumber says of them in their locale's region (as a reader
    sees them): "impossible" (Faker's junk, e.g. "00333 844965"), "invalid" (a possible length, no such
    range), "valid". Per locale."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in samples:
        if s.kind != "phone" or corpus.covered(s, find_kind("phone", s.text)):
            continue
        written = corpus.canonical(s.text[s.core[0] : s.core[1]])
        try:
            number = phonenumbers.parse(written, corpus.REGIONS[s.locale])
            verdict = (
                "valid"
                if phonenumbers.is_valid_number(number)
                else "invalid"
                if phonenumbers.is_possible_number(number)
                else "impossible"
            )
        except phonenumbers.NumberParseException:
            verdict = "impossible"
        out[s.locale][verdict] += 1
    return {locale: dict(v) for locale, v in out.items()}


def by_kind(find: Finder) -> Callable[[str, str], list[Found]]:
    return lambda kind, text: [f for f in find(text) if f.detector == kind]


# --- cost -------------------------------------------------------------------------------------------------
def corpus_prompts(count: int, seed: int = 7) -> list[str]:
    """count prompts of PROMPT_BYTES made of corpus sentences, about one PII sentence in four."""
    rng = random.Random(seed)
    pii = [s.text for s in corpus.pii_samples() + corpus.evasion_samples()]
    benign = [b.text for b in corpus.benign_samples()]
    prompts = []
    for _ in range(count):
        parts, size = [], 0
        while size < PROMPT_BYTES:
            sentence = rng.choice(pii) if rng.random() < 0.25 else rng.choice(benign)
            parts.append(sentence)
            size += len(sentence.encode()) + 1
        text = " ".join(parts).encode()[:PROMPT_BYTES].decode("utf-8", "ignore")
        prompts.append(text)
    return prompts


def percentiles(samples_ns: list[int]) -> dict:
    samples_ns.sort()
    p99 = samples_ns[min(len(samples_ns) - 1, int(len(samples_ns) * 0.99))]
    return {
        "p50_us": round(samples_ns[len(samples_ns) // 2] / 1000, 2),
        "p99_us": round(p99 / 1000, 2),
        "max_us": round(samples_ns[-1] / 1000, 2),
        "calls": len(samples_ns),
    }


def cost(call: Callable[[str], object], prompts: Sequence[str], repeat: int) -> dict:
    for text in prompts[: max(1, len(prompts) // 10)]:
        call(text)
    clock = time.perf_counter_ns
    gc.collect()
    samples = []
    for _ in range(repeat):
        for text in prompts:
            start = clock()
            call(text)
            samples.append(clock() - start)
    return percentiles(samples)


def fixed_prompts() -> dict[str, str]:
    """The prompts of earlier runs: 2 KB prose with and without five PII items woven in, and 200 bytes."""
    plain = PROSE[:2048]
    woven, taken_from = [], 0
    for k, item in enumerate(PII_ITEMS):
        cut = PROSE.find(". ", 300 * (k + 1)) + 1
        woven += [PROSE[taken_from:cut], " " + item]
        taken_from = cut
    text = "".join(woven) + PROSE[taken_from:]
    while len(text) > 2048:
        text = text[: text.rfind(" ", 0, len(text) - 1)]
    return {"plain_2k": plain, "pii_2k": text, "short_200": PROSE[:200]}


PROSE = (
    "Thanks for the notes from Tuesday's planning session. Before we commit to the roadmap for the next "
    "quarter, I would like us to agree on a few principles. First, the onboarding flow is still the place "
    "where we lose most new users: roughly 40 percent of the people who start the setup wizard never finish "
    "it, and the survey we ran in 2023 suggests that the permissions step is the main reason. Second, the "
    "reporting module has grown organically for years and nobody on the team feels confident changing it. "
    "Third, our release process depends on one person remembering a long checklist, which is fragile.\n\n"
    "For onboarding, the proposal is to split the wizard into two short stages, to explain each permission "
    "in plain language at the moment it is needed, and to let people skip the optional integrations "
    "entirely. Design has a prototype ready, and the research team can run five moderated sessions next "
    "week. If the prototype tests well, engineering estimates about three sprints of work, including the "
    "migration of existing accounts and the updates to the help center articles.\n\n"
    "For reporting, I suggest we do not attempt a rewrite. Instead, we should write characterization tests "
    "around the current behaviour, then extract the export code into its own package, since that is where "
    "most of the customer complaints come from. The goal for the quarter is modest: fewer regressions, and "
    "a clear owner for each part of the module. Version 3.2 of the export library already fixes the "
    "encoding problem that support keeps escalating, so upgrading should be the first small step.\n\n"
    "For releases, the release checklist should become a script that anyone on the team can run, with the "
    "manual steps reduced to a final review. We agreed to freeze features on 2024-03-15 and to ship the "
    "week after, so the script has to be ready before then. Please reply with your concerns, or add them "
    "to the shared document, by the end of the week, and I will summarise the decisions in our next "
    "meeting. Let me know if any of this conflicts with commitments I am not aware of. Finally, a reminder "
    "that the office will be closed on Friday afternoon for the building maintenance work."
)
PII_ITEMS = [
    "You can reach me at jane.doe@example.com if anything is unclear.",
    "The team card for the pilot is 4111 1111 1111 1111, expiring next year.",
    "Call me on +1 415 555 2671 after lunch.",
    "Vendor refunds go to IBAN DE89 3704 0044 0532 0130 00 as before.",
    "HR still needs my SSN 123-45-6789 for the form.",
]


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
    }


# --- printing -----------------------------------------------------------------------------------------------
def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_quality(results: dict[str, dict]) -> None:
    systems = list(results)
    ours = results["detectors"]
    print(f"\n{'recall':<22}" + "".join(f"{s:>12}" for s in systems) + "   target")
    for kind in corpus.KINDS:
        for subset in (None, "plain", "evasion"):
            label = kind if subset is None else f"  {subset}"
            row = []
            for s in systems:
                r = (
                    results[s]["recall"].get(kind)
                    if subset is None
                    else results[s]["recall_by_set"].get(kind, {}).get(subset)
                )
                row.append(pct(r and r["recall"]))
            n = (
                ours["recall"][kind]["n"]
                if subset is None
                else ours["recall_by_set"].get(kind, {}).get(subset, {}).get("n", 0)
            )
            target = f">= {RECALL_TARGET[kind]:.1%}" if subset is None else ""
            print(f"{label + f' (n={n})':<22}" + "".join(f"{v:>12}" for v in row) + f"   {target}")
    print(f"\n{'false positives':<22}" + "".join(f"{s:>12}" for s in systems) + "   target")
    for kind in corpus.KINDS:
        row = [pct(results[s]["false_positive_rate"][kind]) for s in systems]
        print(
            f"{kind + ' (n=' + str(ours['benign_sentences']) + ')':<22}"
            + "".join(f"{v:>12}" for v in row)
            + f"   <= {FALSE_POSITIVE_MAX:.0%}"
        )
    locales = [*corpus.LOCALES, "intl"]
    print("\nrecall by locale (detectors; phone also reference)")
    kinds = list(corpus.KINDS)
    print(f"{'locale':<8}" + "".join(f"{k:>10}" for k in kinds) + f"{'phone ref':>11}")
    for locale in locales:
        cells = []
        for kind in kinds:
            r = ours["recall_by_locale"].get(kind, {}).get(locale)
            cells.append(pct(r and r["recall"]))
        ref = results.get("reference", {}).get("recall_by_locale", {}).get("phone", {}).get(locale)
        print(f"{locale:<8}" + "".join(f"{c:>10}" for c in cells) + f"{pct(ref and ref['recall']):>11}")
    print("\nrecall by transform below 100% (detectors)")
    for kind in corpus.KINDS:
        low = [(v, r) for v, r in ours["recall_by_transform"].get(kind, {}).items() if r["recall"] < 1]
        if low:
            low.sort(key=lambda item: item[1]["recall"])
            print(f"  {kind}: " + ", ".join(f"{v} {r['recall']:.0%}" for v, r in low))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=200, help="2 KB corpus prompts for the cost measurement")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per corpus prompt and system")
    parser.add_argument("--iterations", type=int, default=1000, help="timed calls per fixed prompt and system")
    parser.add_argument(
        "--classifier",
        default="",
        metavar="MODEL.onnx",
        help="also time the ONNX sensitivity classifier (featurize + onnxruntime)",
    )
    parser.add_argument("--out", default=str(RESULTS / "classify.json"), help="JSON output")
    args = parser.parse_args()

    policy = PolicyConfig(classifier_model=args.classifier) if args.classifier else PolicyConfig()
    regions = PolicyConfig().phone_regions
    detectors = Detectors(BUILTIN_DETECTORS, (), regions)
    router = PromptClassifier(policy)
    reference = reference_finders(regions)
    peers = {
        "presidio": "not installed"
        if importlib.util.find_spec("presidio_analyzer") is None
        else "installed, not measured (its NLP engine needs a spaCy model)"
    }

    started = time.monotonic()
    samples = corpus.pii_samples() + corpus.evasion_samples()
    benign = corpus.benign_samples()
    print(
        f"corpus: {len(samples)} PII samples ({len(corpus.evasion_samples())} evasion), {len(benign)} benign "
        f"sentences, built in {time.monotonic() - started:.1f} s",
        flush=True,
    )

    cache: dict[str, list[Found]] = {}

    def ours(kind: str, text: str) -> list:
        if text not in cache:
            cache[text] = detectors.find(text)
        return [s for s in cache[text] if s.detector == kind]

    results = {
        "detectors": quality("detectors", ours, samples, benign),
        "reference": quality("reference", lambda kind, text: reference[kind](text), samples, benign),
        "naive": quality("naive", by_kind(naive_find), samples, benign),
    }

    phone_verdicts = phone_misses_by_verdict(ours, samples)
    results["detectors"]["phone_misses_by_libphonenumber_verdict"] = phone_verdicts

    prompts = corpus_prompts(args.prompts)
    systems: dict[str, Callable[[str], object]] = {
        "detectors": detectors.find,
        "classify": lambda text: router.classify([text]),
        "reference": lambda text: [f for find in reference.values() for f in find(text)],
        "ref_phone": reference["phone"],
        "naive": naive_find,
        # where the detectors' time goes: all but phone, and phone alone
        "no_phone": Detectors([n for n in BUILTIN_DETECTORS if n != "phone"]).find,
        "phone_only": Detectors(["phone"], (), regions).find,
    }
    if args.classifier:
        from edgefleet.featurize import featurize

        systems.update({"featurize": featurize, "classifier": router.model.score})
    load_before = os.getloadavg()[0]
    costs = {}
    for name, call in systems.items():
        repeat = 1 if name in ("reference", "ref_phone") else args.repeat  # 12 matchers per prompt: slow
        costs[name] = cost(call, prompts, repeat)
        print(f"  cost {name}: p50 {costs[name]['p50_us']:.0f} us", flush=True)
    fixed = {}
    for name, text in fixed_prompts().items():
        for system in ("detectors", "classify", "naive") + (("classifier",) if args.classifier else ()):
            fixed.setdefault(system, {})[name] = cost(systems[system], [text], args.iterations)
    load_after = os.getloadavg()[0]

    print_quality(results)
    print(
        "phone numbers the detectors miss, by libphonenumber's verdict in the locale's region: "
        + (
            ", ".join(
                f"{locale} " + "/".join(f"{k} {n}" for k, n in sorted(v.items()))
                for locale, v in sorted(phone_verdicts.items())
            )
            or "none"
        )
    )
    base = costs["detectors"]
    print(f"\ncost per 2 KB corpus prompt ({args.prompts} prompts x {args.repeat}; reference x 1)")
    print(f"{'system':<12}{'p50 us':>10}{'p99 us':>10}{'max us':>10}{'p50 ratio':>11}{'p99 ratio':>11}")
    for name, c in costs.items():
        print(
            f"{name:<12}{c['p50_us']:>10.1f}{c['p99_us']:>10.1f}{c['max_us']:>10.1f}"
            f"{c['p50_us'] / base['p50_us']:>10.2f}x{c['p99_us'] / base['p99_us']:>10.2f}x"
        )
    print(
        "\nfixed prompts (p50 / p99 us): "
        + "; ".join(
            f"{system} " + ", ".join(f"{n} {r['p50_us']:.0f}/{r['p99_us']:.0f}" for n, r in by.items())
            for system, by in fixed.items()
        )
    )
    print("peers: " + ", ".join(f"{k}: {v}" for k, v in peers.items()))

    ours_q = results["detectors"]
    meets = {
        "recall": all(ours_q["recall"][k]["recall"] >= RECALL_TARGET[k] for k in corpus.KINDS),
        "false_positives": all(ours_q["false_positive_rate"][k] <= FALSE_POSITIVE_MAX for k in corpus.KINDS),
        "cost_p99": base["p99_us"] < TARGET_P99_US,
    }
    print(
        f"targets: recall {'met' if meets['recall'] else 'NOT met'}, false positives "
        f"{'met' if meets['false_positives'] else 'NOT met'}, detectors p99 < {TARGET_P99_US:.0f} us "
        f"{'met' if meets['cost_p99'] else 'NOT met'} (load average {load_before:.2f} -> {load_after:.2f}; "
        f"{time.monotonic() - started:.0f} s in all)"
    )

    report = {
        "benchmark": "classify",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "corpus": {
            "pii_samples": len(samples),
            "evasion_samples": len(corpus.evasion_samples()),
            "benign_sentences": len(benign),
            "seed": 13,
        },
        "target": {
            "recall": RECALL_TARGET,
            "false_positive_max": FALSE_POSITIVE_MAX,
            "detectors_p99_us": TARGET_P99_US,
        },
        "quality": results,
        "cost_2k_corpus_prompts": {"prompts": args.prompts, "repeat": args.repeat, "systems": costs},
        "cost_fixed_prompts": {"iterations": args.iterations, "systems": fixed},
        "ratios_p50": {name: round(c["p50_us"] / base["p50_us"], 2) for name, c in costs.items()},
        "peers": peers,
        "classifier_model": args.classifier or None,
        "meets_target": meets,
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
    }
    write_results("classify", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
