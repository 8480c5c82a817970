"""`syre diagnose`: loads a model by import path, a checkpoint and data; prints and writes the report;
names the file, import path or checkpoint key at fault."""
import json
import textwrap

import numpy as np
import pytest
import torch

import syre
from syre import cli, diagnose

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only add overhead

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


class CharLM(nn.Module):
    def __init__(self, vocab=20, d=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        return self.head(torch.tanh(self.emb(idx)))


def act_mlp(width=16, act="relu", scale=1.0):
    act_layer = {"relu": nn.ReLU, "tanh": nn.Tanh}[act]()
    m = nn.Sequential(nn.Linear(64, width), act_layer, nn.Linear(width, 10))
    m.scale = scale
    return m


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
    # both sides named: the file and entry, the model's import path, the keys each side lacks, examples of each
    assert f"--checkpoint {tmp_path / 'bad.pt'} does not match the model from diag_models:mlp" in err
    assert "missing in the checkpoint (the model has them): ['2.bias']" in err
    assert "not in the model (the checkpoint has them): ['extra.weight']" in err
    assert "0.weight: checkpoint (16, 64), model (12, 64)" in err
    assert "the model's keys: ['0.bias', '0.weight', '2.bias', '2.weight'] (4 in all)" in err
    assert "the checkpoint's keys: ['0.bias', '0.weight', '2.weight', 'extra.weight'] (4 in all)" in err
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


def test_token_ids_from_npz_stay_integer(models, tmp_path, capsys):
    ids = np.random.default_rng(0).integers(0, 20, size=(64, 12)).astype(np.int32)
    np.savez(tmp_path / "ids.npz", x=ids)
    x = diagnose.load_inputs(str(tmp_path / "ids.npz"))
    assert x.dtype == torch.int64 and torch.equal(x, torch.from_numpy(ids).long())
    code, out, err = main(["diagnose", "--model", "diag_models:CharLM", "--data", str(tmp_path / "ids.npz"),
                           "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["config"]["dtype"] == "int64" and [layer["name"] for layer in d["layers"]] == ["emb", "head"]
    # the embedding's representation can only span the distinct ids looked up: its maximum says so
    distinct = len(np.unique(ids))
    assert d["layers"][0]["input_rank"] == distinct - 1
    assert d["collapsed"] is False, out
    # floating arrays become float32; integer-valued features can be made float
    np.savez(tmp_path / "pix.npz", x=np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    assert diagnose.load_inputs(str(tmp_path / "pix.npz")).dtype == torch.int64
    assert diagnose.load_inputs(str(tmp_path / "pix.npz"), dtype="float32").dtype == torch.float32
    code, _, err = main(["diagnose", "--model", "diag_models:mlp", "--data", str(tmp_path / "pix.npz")], capsys)
    assert code == 2 and "pass --dtype float32" in err  # the hint for integer pixels fed to a float model
    code, _, err = main(["diagnose", "--model", "diag_models:mlp", "--data", str(tmp_path / "pix.npz"),
                         "--dtype", "float32", "--mean", "data", "--std", "data"], capsys)
    assert code == 0, err
    code, _, err = main(["diagnose", "--model", "diag_models:CharLM", "--data", "synthetic", "--shape", "10"], capsys)
    assert code == 0, err  # synthetic token ids for an Embedding-first model


def test_file_factory_imports_its_neighbours(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["syre.diagnose"])
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "blocks_for_diagnose.py").write_text(textwrap.dedent("""
        from torch import nn

        def block(n_in, n_out):
            return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU())
    """))
    (proj / "net_for_diagnose.py").write_text(textwrap.dedent("""
        from torch import nn
        from blocks_for_diagnose import block      # a neighbour, imported at import time

        def make(width=8):
            from blocks_for_diagnose import block as late   # and when the factory runs
            return nn.Sequential(block(64, width), late(width, width), nn.Linear(width, 10))
    """))
    monkeypatch.chdir(tmp_path)  # neither the file's folder nor this one holds blocks_for_diagnose
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    code, out, err = main(["diagnose", "--model", "proj/net_for_diagnose.py:make", "--model-arg", "width=12",
                           "--data", "synthetic"], capsys)
    assert code == 0, err
    assert "syre audit of Sequential" in out and " 12 " in out


def test_factory_keyword_arguments_from_the_command_line(models, capsys):
    assert diagnose.parse_model_args(["width=8", "act=tanh", "scale=0.5"], '{"width": 4}') == \
        {"width": 8, "act": "tanh", "scale": 0.5}  # literals parsed, bare words kept as strings, --model-arg wins
    code, out, err = main(["diagnose", "--model", "diag_models:act_mlp", "--model-arg", "width=6",
                           "--model-arg", "act=tanh", "--data", "synthetic"], capsys)
    assert code == 0, err
    assert "tanh" in out and " 6 " in out
    code, _, err = main(["diagnose", "--model", "diag_models:act_mlp", "--model-arg", "depth=3",
                         "--data", "synthetic"], capsys)
    assert code == 2 and "depth" in err and "it takes (width=16, act='relu', scale=1.0)" in err
    code, _, err = main(["diagnose", "--model", "diag_models:act_mlp", "--model-arg", "3=x", "--data", "synthetic"],
                        capsys)
    assert code == 2 and "invalid --model-arg '3=x'" in err


def test_normalisation_given_or_computed(tmp_path):
    x = torch.rand(100, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 5 + 2
    y, how = diagnose.normalise(x, "2.0", "0.5")
    assert torch.allclose(y, (x - 2.0) / 0.5) and how == "normalised with mean 2.0, std 0.5"
    y, _ = diagnose.normalise(x, "1,2,3", "1,1,2")
    assert torch.allclose(y[:, 2], (x[:, 2] - 3) / 2) and torch.allclose(y[:, 0], x[:, 0] - 1)
    y, how = diagnose.normalise(x, "data", "data")  # per channel of an image batch
    assert "per channel" in how
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5)
    flat = torch.cat([torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 4 + 1, torch.ones(50, 1)], 1)
    y, how = diagnose.normalise(flat, "data", "data")  # per feature; a constant feature keeps std 1
    assert "per feature" in how and torch.allclose(y[:, :3].std(dim=0), torch.ones(3), atol=1e-5)
    assert torch.equal(y[:, 3], torch.zeros(50))
    with pytest.raises(diagnose.DiagnoseError, match="2 values for inputs with 3 channels"):
        diagnose.normalise(x, "1,2", None)
    with pytest.raises(diagnose.DiagnoseError, match="std.*> 0"):
        diagnose.normalise(x, None, "0")
    with pytest.raises(diagnose.DiagnoseError, match="integers"):
        diagnose.normalise(torch.arange(10).reshape(5, 2), "data", None)


def test_prefixed_checkpoint_keys_are_matched(models, tmp_path, capsys):
    m = duplicated_mlp()
    torch.save({"state_dict": {"model." + k: v for k, v in m.state_dict().items()}}, tmp_path / "lightning.pt")
    torch.save({"net." + k: v for k, v in m.state_dict().items()}, tmp_path / "net.pt")
    for name in ("lightning.pt", "net.pt"):
        code, out, err = main(["diagnose", "--model", "diag_models:mlp", "--checkpoint", str(tmp_path / name),
                               "--data", "synthetic"], capsys)
        assert code == 0, err
        assert "stripped the prefix" in err and "0: 2 of 16 units duplicated" in out


def test_reference_follows_the_checkpoint(models, tmp_path, capsys):
    torch.save(duplicated_mlp().state_dict(), tmp_path / "ck.pt")
    base = ["diagnose", "--model", "diag_models:mlp", "--data", "synthetic", "--json", str(tmp_path / "r.json")]
    code, _, err = main(base + ["--checkpoint", str(tmp_path / "ck.pt")], capsys)
    assert code == 0, err
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["config"]["reference"] == "factory" and d["meta"]["reference"] == "diag_models:mlp as built, before the checkpoint"
    assert d["layers"][0]["reference"]["duplicated"] == 0  # the factory's model, before the checkpoint
    code, _, err = main(base + ["--checkpoint", str(tmp_path / "ck.pt"), "--reference", "none"], capsys)
    assert code == 0 and json.loads((tmp_path / "r.json").read_text())["meta"]["reference"] is None
    code, _, err = main(base, capsys)
    assert code == 0 and json.loads((tmp_path / "r.json").read_text())["config"]["reference"] == "init"
    code, _, err = main(base + ["--reference", "factory"], capsys)
    assert code == 2 and "without --checkpoint" in err
