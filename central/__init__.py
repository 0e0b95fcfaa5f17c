"""The coordinator and the ``edgefleet`` CLI (enrollment, fleet API, rollouts: issue 3 onward)."""
