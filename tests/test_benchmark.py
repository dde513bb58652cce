"""The benchmark runs end to end on the device it is given and says which, with the baseline in the same run. CI has
no GPU: this runs the same code path on the CPU (every tensor moved with `.to(device)`, every timer behind
`synchronize(device)`)."""

import json

import yaml
from helpers import ROOT, overrides, run_script

from transformer.config import apply_overrides, load_config


def tiny_config_file(tmp_path):
    config = apply_overrides(load_config(ROOT / "configs" / "demo.yaml"), overrides(data__demo_train_size=400)[1::2])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def test_the_benchmark_reports_training_and_decoding_on_the_device_it_was_given(tmp_path, demo_run):
    out = tmp_path / "bench.json"
    args = ["--config", str(tiny_config_file(tmp_path)), "--checkpoint", str(demo_run), "--device", "cpu"]
    result = run_script(
        "benchmark.py", *args, "--steps", "2", "--warmup", "1", "--single", "2", "--profile", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and "device: cpu" in result.stdout
    assert {"ours fp32", "torch.nn.Transformer fp32"} <= set(report["training"])
    assert all(t["tgt_tokens_per_s"] > 0 and t["peak_fraction"] > 0 for t in report["training"].values())
    decoding = report["decoding"]
    assert any(name.startswith("ours, beam 5") for name in decoding)
    assert any(name.startswith("torch.nn.Transformer") for name in decoding)
    assert all(d["sentences_per_s"] > 0 for d in decoding.values())
    step, decode = report["profile"].values()  # milliseconds by kind: every kind a training step has is seen
    assert all(step[kind] > 0 for kind in ("matmul", "attention", "elementwise", "loss", "optimizer", "data"))
    assert decode["matmul"] > 0 and decode["attention"] > 0 and decode["loss"] == decode["optimizer"] == 0
    assert "where the time goes" in result.stdout

    inference = tmp_path / "inference.json"
    result = run_script("benchmark.py", *args, "--inference", "--repeats", "1", "--json", str(inference))
    assert result.returncode == 0, result.stderr
    engines = json.loads(inference.read_text())
    assert engines["device"] == "cpu" and {"ours, greedy", "ours, beam 5"} <= set(engines["engines"])
    assert all(e["bleu"] > 0 for e in engines["engines"].values())
