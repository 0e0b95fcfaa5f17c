"""Prompt classification benchmark: the validated PII detectors against bare regexes, per call, one run.

Systems, each called on the same prompts in turn, in-process:
  detectors   edge_agent.policy.detectors.Detectors(BUILTIN_DETECTORS).find: email, phone, card, iban,
              us_ssn, validated (Luhn, mod-97, digit counts, SSN areas), overlaps resolved
  naive       one bare re.findall per detector over the whole text, no validation: what a first
              version would do; its finding counts show what validation removes
  presidio    presidio_analyzer, when installed (it is not a dependency; not installed: skipped, said so)
  classifier  with --classifier MODEL.onnx: the router's SensitivityModel.score (featurize, one
              onnxruntime run), featurize alone, and `classify`: PromptClassifier.classify, the whole
              classification a request gets (every detector, then the model)

Prompts: 2 KB of ordinary English prose without personal data (a year, a percentage, a date and a
version number, as prose has), the same 2 KB with five PII items woven in (email, card, phone, IBAN,
US SSN), and a 200-byte prompt. Per system and prompt: --iterations timed calls after --warmup
untimed ones; median, p99 and max microseconds per call; findings per call. Targets: detectors on 2 KB
with PII under 150 us median, and under 1 ms p99. The machine may be shared: the 1-minute load average
is recorded before and after. Results: bench/results/classify.json. Usage:
    python bench/classify.py [--iterations 2000] [--warmup 200] [--classifier MODEL.onnx] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib.util
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Callable

from results_file import RESULTS, write_results  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.config import BUILTIN_DETECTORS  # noqa: E402
from edge_agent.policy.detectors import Detectors  # noqa: E402

TARGET_P50_US, TARGET_P99_US = 150.0, 1000.0

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
# Bare patterns, one per detector, as a first version would write them.
NAIVE = {
    "email": re.compile(r"\S+@\S+\.\S+"),
    "phone": re.compile(r"\+?\d[\d\s().-]{6,}\d"),
    "card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
    "us_ssn": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
}


def prompts() -> dict[str, str]:
    plain = PROSE[:2048]
    # each PII sentence after the sentence ending nearest 300, 600, ... characters in, then cut back to
    # 2 KB at a word boundary
    woven, taken_from = [], 0
    for k, item in enumerate(PII_ITEMS):
        cut = PROSE.find(". ", 300 * (k + 1)) + 1
        woven += [PROSE[taken_from:cut], " " + item]
        taken_from = cut
    woven = "".join(woven) + PROSE[taken_from:]
    while len(woven) > 2048:
        woven = woven[:woven.rfind(" ", 0, len(woven) - 1)]
    for item in ("jane.doe@example.com", "4111 1111 1111 1111", "+1 415 555 2671", "DE89 3704", "123-45-6789"):
        assert item in woven, item
    short = PROSE[:200]
    return {"plain_2k": plain, "pii_2k": woven, "short_200": short}


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "arch": platform.machine(),
            "python": platform.python_version(), "implementation": platform.python_implementation()}


def measure(call: Callable[[str], object], text: str, iterations: int, warmup: int) -> dict:
    for _ in range(warmup):
        call(text)
    samples = []
    clock = time.perf_counter_ns
    gc.collect()
    for _ in range(iterations):
        start = clock()
        call(text)
        samples.append(clock() - start)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return {"p50_us": round(samples[len(samples) // 2] / 1000, 2), "p99_us": round(p99 / 1000, 2),
            "max_us": round(samples[-1] / 1000, 2), "iterations": iterations}


def naive_find(text: str) -> list:
    return [m for pattern in NAIVE.values() for m in pattern.findall(text)]


def classifier_calls(model_path: str) -> dict[str, Callable[[str], object]]:
    """The router's own objects: the sensitivity model alone, featurize alone, and the whole classification a
    request gets (every detector, then the model), as edge_agent.gateway calls it."""
    from edge_agent.config import PolicyConfig
    from edge_agent.policy.classify import PromptClassifier
    from federated.tasks import sensitivity

    router = PromptClassifier(PolicyConfig(classifier_model=model_path))
    return {"featurize": sensitivity.featurize, "classifier": router.model.score,
            "classify": lambda text: router.classify([text])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000, help="timed calls per system and prompt")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls before them")
    parser.add_argument("--classifier", default="", metavar="MODEL.onnx",
                        help="also time the ONNX sensitivity classifier (featurize + onnxruntime)")
    parser.add_argument("--out", default=str(RESULTS / "classify.json"), help="JSON output")
    args = parser.parse_args()

    detectors = Detectors(BUILTIN_DETECTORS)
    systems: dict[str, Callable[[str], object]] = {"detectors": detectors.find, "naive": naive_find}
    peers = {"presidio": "not installed" if importlib.util.find_spec("presidio_analyzer") is None
             else "installed, not measured (its NLP engine needs a spaCy model)"}
    if args.classifier:
        systems.update(classifier_calls(args.classifier))
    texts = prompts()

    report = {"benchmark": "classify", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "iterations": args.iterations, "warmup": args.warmup,
              "target": {"detectors_pii_2k_p50_us": TARGET_P50_US, "detectors_p99_us": TARGET_P99_US},
              "prompts": {name: len(text.encode()) for name, text in texts.items()},
              "peers": peers, "classifier_model": args.classifier or None, "results": {}}
    load_before = os.getloadavg()[0]
    for system, call in systems.items():
        for name, text in texts.items():
            result = measure(call, text, args.iterations, args.warmup)
            if system in ("detectors", "naive"):
                result["findings"] = len(call(text))
            if system == "detectors":
                result["fired"] = sorted(detectors.fired(text))
            report["results"].setdefault(system, {})[name] = result
            print(f"{system:<11}{name:<10} p50 {result['p50_us']:>9.1f} us", flush=True)
    report["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    results = report["results"]
    ours = results["detectors"]
    ratios = {f"{peer}/detectors {name}": round(results[peer][name]["p50_us"] / ours[name]["p50_us"], 2)
              for peer in ("naive", "featurize", "classifier", "classify") if peer in results for name in texts}
    report["ratios_p50"] = ratios
    report["meets_target"] = (ours["pii_2k"]["p50_us"] < TARGET_P50_US
                              and max(r["p99_us"] for r in ours.values()) < TARGET_P99_US)

    print(f"\n{'system':<12}{'prompt':<11}{'p50 us':>9}{'p99 us':>9}{'max us':>9}{'findings':>10}  fired")
    for system, by_prompt in results.items():
        for name, r in by_prompt.items():
            print(f"{system:<12}{name:<11}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{r['max_us']:>9.1f}"
                  f"{r.get('findings', '-'):>10}  {','.join(r.get('fired', [])) or '-'}")
    print("peers: " + ", ".join(f"{k}: {v}" for k, v in peers.items()))
    print("ratios (p50): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print(f"target: detectors pii_2k p50 < {TARGET_P50_US:.0f} us and p99 < {TARGET_P99_US:.0f} us: "
          f"{'met' if report['meets_target'] else 'NOT met'} (load average {report['loadavg_1m']})")
    write_results("classify", report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
