"""FLOPs and params counted from the network as built equal NB201's for every cell."""

import numpy as np
import pytest

from cells import skeleton as sk
from cells import space
from micronas_jax.hardware import flops

TOL_M = 1e-4  # the tolerance, in millions; the counts are in fact exact


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "ImageNet16-120"])
def test_all_cells_match_nb201(table, dataset):
    tab = flops.cost_table(sk.Skeleton.for_dataset(dataset))
    matrices = space.all_matrices()
    params = tab.params(matrices) / 1e6
    assert np.abs(params - table.params_M[dataset]).max() <= TOL_M
    got = tab.flops(matrices) / 1e6
    if dataset in table.flops_M:
        assert np.abs(got - table.flops_M[dataset]).max() <= TOL_M
    else:
        # The table has no CIFAR-100 FLOPs column: CIFAR-100 differs from CIFAR-10 only in the
        # classifier, 64 -> 100 instead of 64 -> 10 (weights + bias).
        delta = (64 * 100 + 100) - (64 * 10 + 10)
        np.testing.assert_allclose(got, table.flops_M["cifar10"] + delta / 1e6, atol=TOL_M)


@pytest.mark.slow
def test_full_walk_equals_table_form_for_every_cell():
    skeleton = sk.Skeleton.for_dataset("cifar10")
    tab = flops.cost_table(skeleton)
    walked_flops = np.array([flops.count_flops(skeleton, c) for c in space.all_cells()])
    np.testing.assert_array_equal(walked_flops, tab.flops(space.all_matrices()))


@pytest.mark.parametrize("dataset", ["cifar100", "ImageNet16-120"])
def test_full_walk_equals_table_form_on_a_sample(dataset):
    skeleton = sk.Skeleton.for_dataset(dataset)
    tab = flops.cost_table(skeleton)
    indices = np.random.default_rng(0).choice(space.NUM_CELLS, 300, replace=False)
    for i in indices:
        cell = space.from_index(int(i))
        assert flops.count_flops(skeleton, cell) == tab.flops(cell.matrix)
        assert flops.count_params(skeleton, cell) == tab.params(cell.matrix)


def test_hand_counted_resnet_cell():
    # Two 3x3 convs per cell: 15 cells x 2 x 9*C*C*H*W summed over stages, plus the fixed part
    # (stem 442,368 + two reductions 3,670,016 each + classifier 650).
    cell = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    per_conv = 9 * 16 * 16 * 32 * 32  # the same at every stage: channels x2, pixels /4
    expected = 442_368 + 2 * 3_670_016 + 650 + 2 * 15 * per_conv
    assert flops.count_flops(sk.Skeleton(), cell) == expected


def test_other_skeletons_scale_as_expected():
    cell = space.from_index(6111)
    small = sk.Skeleton(C=8, N=1, resolution=16)
    n3, n1 = cell.count("nor_conv_3x3"), cell.count("nor_conv_1x1")
    conv_part = sum(
        (9 * n3 + n1) * w * w * (16 // 2**s) ** 2 for s, w in enumerate(small.widths))
    empty = space.Cell(("none",) * 6)
    assert flops.count_flops(small, cell) - flops.count_flops(small, empty) == conv_part


def test_bad_matrix_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 6, 5\)"):
        flops.cost_table(sk.Skeleton()).flops(np.zeros((3, 5)))
