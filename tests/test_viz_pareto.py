"""The Pareto picture: labels never overlap each other or a marker, the legend covers no point."""

from __future__ import annotations

import pytest

from morphsearch.viz import pareto_figure


def _crowded_front() -> list[tuple[str, float, float]]:
    # twelve front points packed into a corner: fixed (4, 4) offsets overlapped here
    return [(f"search/{i:08x}{i}", 1000 + 15 * i, 0.80 + 0.002 * i) for i in range(12)]


def test_labels_do_not_overlap_and_the_legend_is_beside_the_axes() -> None:
    import matplotlib.pyplot as plt

    front = _crowded_front()
    points = [*front, ("search/far", 5000.0, 0.5)]
    fig = pareto_figure(points, front, metric="val_accuracy")
    try:
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        labels = [t.get_window_extent(renderer) for t in ax.texts]
        assert labels, "no label was placed"
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                assert not a.overlaps(b)
        markers = [ax.transData.transform((x, y)) for _, x, y in points]
        for box in labels:
            assert not any(box.contains(px, py) for px, py in markers)
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer))
        assert not any(legend.contains(px, py) for px, py in markers)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n", [1, 3])
def test_a_sparse_front_labels_every_point(n: int) -> None:
    import matplotlib.pyplot as plt

    front = [(f"s/a{i}", 10.0 ** (i + 1), 0.5 + 0.1 * i) for i in range(n)]
    fig = pareto_figure(front, front, metric="val_accuracy")
    try:
        assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(
            a.split("/")[1] for a, _, _ in front
        )
    finally:
        plt.close(fig)
