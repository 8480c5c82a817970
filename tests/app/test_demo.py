import json

import pytest

from syre import cli, demo


def test_demo_shows_collapse_and_its_removal(tmp_path, capsys):
    assert cli.main(["demo", "--seeds", "1", "--steps", "120", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "distinct neurons" in out and "syre" in out
    saved = json.loads((tmp_path / "demo.json").read_text())
    s = saved["summary"]
    assert s["weight decay"]["distinct_neurons"][0] == 4 and s["no decay"]["distinct_neurons"][0] == 4
    assert s["syre"]["distinct_neurons"][0] == 32 and s["syre"]["weight_rank"][0] == 32
    assert s["syre"]["train_loss"][0] < 0.8 * s["weight decay"]["train_loss"][0]
    # the copies stay bit-identical without syre
    for r in saved["results"]:
        if r["arm"] != "syre":
            assert all(c["spread"] == 0.0 for c in r["curve"])
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_counting_helpers_at_their_extremes():
    m = demo.duplicated_start(0, width=12, distinct=3)
    assert demo.count_distinct(m) == 3 and demo.weight_rank(m) == 3 and demo.copy_spread(m, 3) == 0.0
    import torch

    with torch.no_grad():
        m[0].weight.add_(1e-2 * torch.randn(m[0].weight.shape, generator=torch.Generator().manual_seed(0)))
    assert demo.count_distinct(m) == 12 and demo.weight_rank(m) == 12


def test_demo_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seeds"):
        demo.run(seeds=0)
