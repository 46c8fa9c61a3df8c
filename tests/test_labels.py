import numpy as np
import pytest

from digitrec import labels


@pytest.mark.parametrize(
    "name, value, c10, c100",
    [
        ("4.6_x.jpg", 4.6, 5, 46),
        ("4.5_x.jpg", 4.5, 5, 45),
        ("4.4_x.jpg", 4.4, 4, 44),
        ("9.5_abc.jpg", 9.5, 0, 95),
        ("9.9_abc.jpg", 9.9, 0, 99),
        ("4_x.jpg", 4.0, 4, 40),
        ("0.0_1.bmp", 0.0, 0, 0),
        ("7.5.jpg", 7.5, 8, 75),
        ("2.3000000000000003_10_dig7.jpg", 2.3, 2, 23),
    ],
)
def test_parse_and_map(name: str, value: float, c10: int, c100: int) -> None:
    v = labels.parse_label(name)
    assert v == pytest.approx(value)
    assert labels.class10(v) == c10
    assert labels.class100(v) == c100
    assert labels.label_for(v, 10) == c10 and labels.label_for(v, 100) == c100


@pytest.mark.parametrize(
    "name, reason",
    [
        ("10_x.jpg", "10_ prefix"),
        ("NaN_1_digit2.jpg", "N prefix"),
        ("N_x.jpg", "N prefix"),
        ("2-1.jpg", "no parseable label"),
        ("0 -0_5_2021.jpg", "no parseable label"),
        ("abc.jpg", "no parseable label"),
        ("7.88_x.jpg", "not a multiple of 0.1"),
        ("12.5_x.jpg", "out of range"),
        ("_x.jpg", "no parseable label"),
    ],
)
def test_unlabelled_names_are_rejected_with_reason(name: str, reason: str) -> None:
    with pytest.raises(labels.LabelError, match=reason):
        labels.parse_label(name)


def test_class10_from_class100_vectorized() -> None:
    c100 = np.arange(100)
    c10 = labels.class10_from_class100(c100)
    assert c10[44] == 4 and c10[45] == 5 and c10[94] == 9 and c10[95] == 0 and c10[4] == 0 and c10[5] == 1


def test_tolerance_wraps_around() -> None:
    pred = np.array([0, 99, 50, 52, 0])
    true = np.array([99, 0, 51, 50, 0])
    assert labels.within_tolerance(pred, true).tolist() == [True, True, True, False, True]
    assert labels.circular_distance(np.array([98]), np.array([1])).tolist() == [3]


def test_read_class_breaks_ties_like_the_firmware():
    """Same vectors as firmware/core/tests/test_core.c::test_read_class."""
    from digitrec.labels import read_class

    cases = [([1, 7, 7, 3, 0, 0], 2), ([5, 9, 9, 5, 0, 0], 1), ([9, 0, 0, 0, 4, 9], 5),
             ([-128, -5, 127, -128, 3, 0], 2), ([-128] * 6, 0)]
    for scores, want in cases:
        assert read_class(np.array(scores, np.int8)) == want, scores
    batch = np.array([c for c, _ in cases], np.int8)
    assert list(read_class(batch)) == [w for _, w in cases]
    # without ties it is argmax
    r = np.random.default_rng(0).permutation(256)[:100].reshape(1, 100) - 128
    assert read_class(r)[0] == r.argmax()
