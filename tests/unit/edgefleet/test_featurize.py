"""edgefleet.featurize: the sensitivity task's hashed features, as the agent's classifier and the federated task
both compute them."""

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet import featurize
from edgefleet.featurize import DIMENSIONS


def test_featurize_deterministic_unit_norm_and_distinct():
    a = featurize.featurize("My card number is 4111 1111 1111 1111")
    assert a.shape == (DIMENSIONS,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, featurize.featurize("My card number is 4111 1111 1111 1111"))
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-6
    np.testing.assert_array_equal(a, featurize.featurize("my CARD number is 4111 1111 1111 1111"))  # lowercased
    b = featurize.featurize("write a haiku about spring")
    assert abs(float(np.linalg.norm(b)) - 1.0) < 1e-6
    assert not np.array_equal(a, b)
    assert float(a @ b) < 0.5


def test_featurize_empty_text_is_zeros():
    empty = featurize.featurize("")
    assert empty.shape == (DIMENSIONS,) and not empty.any()
    assert featurize.featurize_all([]).shape == (0, DIMENSIONS)


def _featurize_by_definition(text: str) -> np.ndarray:
    """The sensitivity features as defined: every feature string hashed with zlib.crc32, one at a time."""
    import zlib

    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    lowered = text.lower()
    words = re.findall(r"\w+", lowered)
    padded = f" {lowered} "
    features = [f"w:{w}" for w in words] + [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
    features += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
    for feature in features:
        vector[zlib.crc32(feature.encode("utf-8")) & (DIMENSIONS - 1)] += 1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet=st.characters(max_codepoint=127), max_size=300))
def test_the_fast_featurizer_hashes_exactly_as_the_definition(text):
    fast = featurize.featurize(text)
    assert fast.dtype == np.float32
    assert np.array_equal(fast, _featurize_by_definition(text))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "A",
        "my card 4111 1111 1111 1111",
        "naïve café, straße, 日本語",
        "x" * 4000,
        "tab\there\nnewline  double  space",
    ],
)
def test_the_fast_featurizer_on_edge_cases(text):
    assert np.array_equal(featurize.featurize(text), _featurize_by_definition(text))
