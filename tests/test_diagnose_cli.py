"""`syre diagnose`: loads a model by import path, a checkpoint and data; prints and writes the report;
names the file, import path or checkpoint key at fault."""
import json
import textwrap

import numpy as np
import pytest
import torch

import syre
from syre import cli, diagnose

MODELS = '''
import torch
from torch import nn


def mlp(width=16):
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)).flatten(1))


INSTANCE = nn.Linear(64, 3)
NOT_A_MODEL = 3
'''


@pytest.fixture
def models(tmp_path, monkeypatch):
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    (pkg / "diag_models.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["syre.diagnose"])  # only this command is under test
    return pkg


def duplicated_mlp(width=16):
    g = torch.Generator().manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        m[0].weight[3], m[0].bias[3], m[2].weight[:, 3] = m[0].weight[1], m[0].bias[1], m[2].weight[:, 1]
    return m


def main(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_checkpoint_digits_json_and_plot(models, tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    torch.save({"model": duplicated_mlp().state_dict(), "step": 10}, ckpt)
    code, out, err = main(["diagnose", "--model", "diag_models:mlp", "--checkpoint", str(ckpt), "--data", "digits",
                           "--batch", "500", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")],
                          capsys)
    assert code == 0, err
    assert "syre audit of Sequential" in out and "on a batch of 500" in out
    assert "0: 2 of 16 units duplicated in 1 group" in out
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["config"]["data"] == "digits" and d["meta"]["batch"] == 500
    assert d["layers"][0]["duplicate_groups"] == [[1, 3]]
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_file_path_model_synthetic_and_npz(models, tmp_path, capsys):
    code, out, err = main(["diagnose", "--model", f"{models / 'diag_models.py'}:Conv", "--data", "synthetic",
                           "--shape", "1,8,8", "--batch", "64"], capsys)
    assert code == 0, err
    assert "c  " in out and "Conv2d" in out and "fc" in out
    np.savez(tmp_path / "x.npz", inputs=np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32))
    code, out, err = main(["diagnose", "--model", "diag_models:mlp", "--model-kwargs", '{"width": 8}',
                           "--data", str(tmp_path / "x.npz")], capsys)
    assert code == 0, err
    assert "on a batch of 40" in out and " 8 " in out
    # synthetic inputs of a Linear-first model need no --shape
    code, out, err = main(["diagnose", "--model", "diag_models:INSTANCE", "--data", "synthetic", "--batch", "32"],
                          capsys)
    assert code == 0, err


def test_syre_state_in_checkpoint_gives_anchor_distances(models, tmp_path, capsys):
    m = duplicated_mlp()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    s = syre.attach(opt, m, sigma0=0.5, seed=3)
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()
    torch.save({"model": m.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ck.pt")
    code, out, err = main(["diagnose", "--model", "diag_models:mlp", "--checkpoint", str(tmp_path / "ck.pt"),
                           "--data", "synthetic", "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    assert "|p-theta0|" in out
    d = json.loads((tmp_path / "r.json").read_text())
    with torch.no_grad():
        expected = float(torch.cat([(m[0].weight - s.anchor("0.weight").theta0).flatten(),
                                    (m[0].bias - s.anchor("0.bias").theta0)]).double().norm())
    assert d["layers"][0]["anchor_distance"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("argv, needle", [
    (["--model", "no_such_pkg.models:mlp", "--data", "synthetic"], "cannot import module 'no_such_pkg.models'"),
    (["--model", "diag_models:nope", "--data", "synthetic"], "has no attribute 'nope'"),
    (["--model", "diag_models", "--data", "synthetic"], "expected 'package.module:factory'"),
    (["--model", "diag_models:NOT_A_MODEL", "--data", "synthetic"], "neither an nn.Module nor callable"),
    (["--model", "missing_file.py:mlp", "--data", "synthetic"], "file not found: missing_file.py"),
    (["--model", "diag_models:mlp", "--checkpoint", "nowhere/model.pt", "--data", "synthetic"],
     "--checkpoint: file not found: nowhere/model.pt"),
    (["--model", "diag_models:mlp", "--data", "cifar"], "invalid --data 'cifar'"),
    (["--model", "diag_models:mlp", "--data", "nowhere.npz"], "--data: file not found: nowhere.npz"),
    (["--model", "diag_models:Conv", "--data", "synthetic"], "needs --shape"),
    (["--model", "diag_models:mlp", "--model-kwargs", "{width: 3}", "--data", "synthetic"], "not JSON"),
    (["--model", "diag_models:mlp", "--data", "digits", "--shape", "3,3"], "does not fit inputs"),
    (["--model", "diag_models:mlp", "--data", "synthetic", "--rtol", "5"], "Invalid rtol"),
])
def test_errors_name_what_is_wrong(models, capsys, argv, needle):
    code, out, err = main(["diagnose"] + argv, capsys)
    assert code == 2
    assert needle in err, err
    assert "Traceback" not in err


def test_mismatched_checkpoint_names_keys_and_shapes(models, tmp_path, capsys):
    sd = duplicated_mlp(width=16).state_dict()
    sd["extra.weight"] = torch.zeros(2)
    del sd["2.bias"]
    torch.save(sd, tmp_path / "bad.pt")
    code, _, err = main(["diagnose", "--model", "diag_models:mlp", "--model-kwargs", '{"width": 12}',
                         "--checkpoint", str(tmp_path / "bad.pt"), "--data", "synthetic"], capsys)
    assert code == 2
    assert "missing in the checkpoint: ['2.bias']" in err
    assert "not in the model: ['extra.weight']" in err
    assert "0.weight: checkpoint (16, 64), model (12, 64)" in err
    # a DDP-style prefix is stripped; a checkpoint that is no dict is refused by name
    torch.save({"module." + k: v for k, v in duplicated_mlp().state_dict().items()}, tmp_path / "ddp.pt")
    code, out, err = main(["diagnose", "--model", "diag_models:mlp", "--checkpoint", str(tmp_path / "ddp.pt"),
                           "--data", "synthetic"], capsys)
    assert code == 0, err
    torch.save([1, 2], tmp_path / "list.pt")
    code, _, err = main(["diagnose", "--model", "diag_models:mlp", "--checkpoint", str(tmp_path / "list.pt"),
                         "--data", "synthetic"], capsys)
    assert code == 2 and "holds a list" in err
    torch.save({"weights": duplicated_mlp().state_dict(), "step": 3}, tmp_path / "nested.pt")
    code, _, err = main(["diagnose", "--model", "diag_models:mlp", "--checkpoint", str(tmp_path / "nested.pt"),
                         "--data", "synthetic"], capsys)
    assert code == 2 and "pass --key" in err
    code, _, err = main(["diagnose", "--model", "diag_models:mlp", "--checkpoint", str(tmp_path / "nested.pt"),
                         "--key", "weights", "--data", "synthetic"], capsys)
    assert code == 0, err


def test_fashion_mnist_source(models, tmp_path, capsys):
    from syre.data import fashion_mnist_dirs

    if not any((d / "t10k-images-idx3-ubyte.gz").exists() or (d / "t10k-images-idx3-ubyte").exists()
               for d in fashion_mnist_dirs()):
        pytest.skip("Fashion-MNIST IDX files are not installed here")
    x = diagnose.load_inputs("fashion-mnist", batch=64, size=7, images=True)
    assert x.shape == (64, 1, 7, 7) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    code, _, err = main(["diagnose", "--model", "diag_models:mlp", "--data", "fashion-mnist", "--size", "5"], capsys)
    assert code == 2 and "invalid --size 5" in err
