"""The NB201 space against the shipped table: order, round trips, isomorphism, errors."""

import numpy as np
import pytest

from cells import space


def test_every_index_round_trips_in_official_order(table):
    cells = space.all_cells()
    assert len(cells) == space.NUM_CELLS == 15625
    for index, cell in enumerate(cells):
        assert cell.to_string() == table.arch_str[index]
        assert space.parse(table.arch_str[index]) == cell
        assert cell.index == index
        assert space.from_index(index) == cell


def test_matrix_round_trip_for_all_cells():
    matrices = space.all_matrices()
    assert matrices.shape == (15625, 6, 5)
    np.testing.assert_array_equal(matrices.sum(axis=2), 1)
    for index in range(0, space.NUM_CELLS, 7):
        cell = space.from_index(index)
        np.testing.assert_array_equal(cell.matrix, matrices[index])
        assert space.from_matrix(matrices[index]) == cell
    # All matrices are distinct: the matrix form is a bijection.
    assert len({m.tobytes() for m in matrices}) == space.NUM_CELLS


def test_isomorphism_keys_equal_nb201_unique_str(table):
    keys = np.array([cell.isomorphism_key() for cell in space.all_cells()])
    np.testing.assert_array_equal(keys, table.unique_str)
    assert len(set(keys)) == 6466


def test_isomorphism_classes_group_like_the_table(table):
    reps = space.isomorphism_classes()
    assert len(np.unique(reps)) == 6466
    # Same class <=> same unique_str, and the representative is the lowest index.
    first = {}
    for index, key in enumerate(table.unique_str):
        first.setdefault(key, index)
    np.testing.assert_array_equal(reps, [first[k] for k in table.unique_str])
    assert all(reps[i] <= i for i in range(space.NUM_CELLS))


def test_canonical_examples():
    # Node order of inputs does not matter; skip edges are transparent; zero paths vanish.
    a = space.parse("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|")
    b = space.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|")
    assert a.isomorphism_key() == b.isomorphism_key()
    assert a.canonical() == b.canonical()
    assert a.canonical().index <= min(a.index, b.index)
    empty = space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert empty.isomorphism_key() == "#+#+#"


def test_parse_accepts_edges_in_any_order_and_whitespace():
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    shuffled = "  |nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+|skip_connect~2|skip_connect~0|nor_conv_3x3~1|\n"
    assert space.parse(shuffled).to_string() == s
    assert space.as_cell(" 1 ") == space.parse(s) == space.as_cell(1)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("", "empty cell string"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 node group"),
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operator 'conv_5x5'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~3|", "not node 3"),
        ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "edge 0->2 appears twice"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 takes exactly 2"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "enclosed in '|'"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "not of the form 'op~i'"),
        ("|none~a|+|none~0|none~1|+|none~0|none~1|none~2|", "input node 'a'"),
        ("|none~-1|+|none~0|none~1|+|none~0|none~1|none~2|", "input node '-1'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", "4 node group"),
        ("|none~0||+|none~0|none~1|+|none~0|none~1|none~2|", "has 2 edge(s)"),
    ],
)
def test_malformed_strings_name_the_problem(bad, message):
    with pytest.raises(space.CellError) as info:
        space.parse(bad)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        (15625, "out of range 0..15624"),
        (-1, "out of range"),
        (True, "must be an integer"),
        (3.0, "must be an integer"),
        ("12x", "1 node group(s)"),  # not digits: parsed as a cell string, which it is not
    ],
)
def test_bad_indices(bad, message):
    with pytest.raises(space.CellError) as info:
        space.as_cell(bad)
    assert message in str(info.value)


def test_bad_matrices_and_ops():
    with pytest.raises(space.CellError, match=r"shape \(6, 5\)"):
        space.from_matrix(np.zeros((5, 5)))
    m = np.eye(5)[[0, 1, 2, 3, 4, 0]].astype(float)
    m[2] = [0, 1, 1, 0, 0]
    with pytest.raises(space.CellError, match=r"rows \(edges\) \[2\]"):
        space.from_matrix(m)
    with pytest.raises(space.CellError, match="unknown operator 'conv7'"):
        space.Cell(("conv7",) * 6)
    with pytest.raises(space.CellError, match="6 edges"):
        space.Cell(("none",) * 5)
    with pytest.raises(space.CellError, match="must be a str"):
        space.parse(None)


def test_corrupt_order_file_is_reported(tmp_path):
    bad = tmp_path / "order.npy"
    np.save(bad, np.zeros(15625, np.uint16))
    with pytest.raises(space.CellError, match="not a permutation"):
        space.load_order(bad)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(space.CellError, match="corrupt"):
        space.load_order(tmp_path / "junk.npy")
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        space.load_order(tmp_path / "missing.npy")
