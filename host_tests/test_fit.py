"""siq fit: the cost model against the linker, the exact solver against brute force, budgets as written, and the
whole fit end to end on a tiny network (mixed widths, within budget, its configuration read back by
`siq quantize --config` into the same model file). Needs the Cortex-M toolchain (the linked sizes)."""
import itertools
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from conftest import FAST_ARCH, tiny_arch
from siq.codegen.cli import main
from siq.codegen.export import write_sources
from siq.codegen.fit.budget import Budget, parse_count, parse_size
from siq.codegen.fit.configfile import read_config, write_config
from siq.codegen.fit.cost import cost_model, is_params, rodata_bytes, rodata_sections
from siq.codegen.fit.run import check_point_search, plan, point_options
from siq.codegen.fit.solve import Choice, brute_force, exact, greedy
from siq.codegen.fit.study import _config_text
from siq.codegen.lower import lower
from siq.codegen.weights import IDENTITY_CODEBOOK_ARRAY
from siq.codegen.target.build import build_elf
from siq.codegen.target.footprint import _map_input_sections, footprint
from siq.training.arch import Arch
from siq.training.errors import SiqError
from siq.training.nets import Net
from siq.training.quant import quantization_points
from siq.training.quantizers import QuantizeConfig, quantize_model

TINY = """name = "tiny"
input = [1, 8, 8]
layers = [{type = "conv", out = 4, k = 3, pad = 1}, {type = "relu"}, {type = "maxpool", k = 2},
          {type = "conv", out = 6, k = 3}, {type = "relu"}, {type = "flatten"},
          {type = "dense", out = 24}, {type = "relu"}, {type = "dense", out = 10}]
"""


# ---------------------------------------------------------------- cost model against the linked firmware

def linked_rodata(qm, tmp_path: Path) -> dict[str, int]:
    """{symbol: bytes} of the model object's .rodata.<symbol> input sections in the linked Cortex-M4 image,
    and footprint()'s weights_bytes (their sum) under "total"."""
    lm = lower(qm)
    (tmp_path / "model").mkdir()
    write_sources(lm, tmp_path / "model")
    elf = build_elf(tmp_path / "model", lm.prefix, tmp_path / "build", "cortex-m4")
    sections = {name.removeprefix(".rodata."): size for name, _, size, origin in
                _map_input_sections(elf.with_suffix(".map"))
                if origin.endswith(f"{lm.prefix}.o") and name.startswith(".rodata.") and size}
    return {**sections, "total": footprint(elf, lm.prefix)["weights_bytes"]}


COST_CASES = {  # name: (architecture, QuantizeConfig fields)
    "kmeans W4A4, fc 8": (tiny_arch(), dict(method="kmeans")),
    "mixed widths, per-channel convs": (tiny_arch(), dict(method="kmeans", layer_bits={0: 1, 4: 3, 7: 2, 10: 8},
                                                          per_channel="conv")),
    "uniform, int16 codebooks, A6": (tiny_arch(), dict(method="uniform", codebook_bits=10, act_bits=6)),
    "fast kernels, one per-channel dense": (Arch.from_dict(FAST_ARCH), dict(method="kmeans", conv_bits=2,
                                                                            fc_bits=5, channel_layers=[8])),
}


@pytest.mark.parametrize("case", COST_CASES)
def test_cost_model_counts_every_linked_read_only_byte(case, digits, tmp_path):
    arch, fields = COST_CASES[case]
    torch.manual_seed(0)
    images = digits.train_x if arch.input == (1, 8, 8) else \
        np.random.default_rng(0).integers(0, 256, (200,) + arch.input, dtype=np.uint8)
    cfg = QuantizeConfig(calibration_images=100, **fields)
    qm = quantize_model(Net(arch), images, digits.train_y[:len(images)], cfg, digits.class_names)[0]
    lm = lower(qm)
    counted, linked = rodata_sections(lm), linked_rodata(qm, tmp_path)
    total = linked.pop("total")
    # every array links exactly as counted; a parameter struct links whole or not at all (GCC folds the struct
    # of a kernel it inlines into that kernel's code); nothing else is in the model's .rodata
    assert set(linked) <= set(counted), sorted(set(linked) - set(counted))
    assert {k: counted[k] for k in linked} == linked
    folded = {k for k in counted if k not in linked}
    # ... and the shared identity codebook of int8 dense weights links only where a kernel reads it (the
    # reference build): the fast dense kernel multiplies the stored weights themselves
    assert all(is_params(k) or k == IDENTITY_CODEBOOK_ARRAY for k in folded), folded
    assert total == sum(linked.values()) == rodata_bytes(lm)["total"] - sum(counted[k] for k in folded)
    # the plan's prediction from the configuration alone: the linked bytes plus the folded structs plus the
    # codebook entries a full codebook would have had
    cm = cost_model(arch, cfg.act_bits, cfg.input_bits, cfg.codebook_bits)
    bits = {i: lc.bits for i, lc in qm.layers.items()}
    channel = {i for i, lc in qm.layers.items() if lc.per_channel}
    # (a dense layer whose int8 weights are stored as their indices emits no codebook of its own: all of it is
    # short; the shared identity codebook it stands in for does not link in this build)
    values = {i for i, op in zip(qm.arch.weighted_layers(), [op for op in lm.ops if op.weights])
              if op.weights.index_is_value}
    shortfall = cm.entry * sum((2**lc.bits - (0 if i in values else lc.entries))
                               * (lc.codebook.shape[0] if lc.per_channel else 1) for i, lc in qm.layers.items())
    folded_bytes = sum(counted[k] for k in folded if k != IDENTITY_CODEBOOK_ARRAY)
    assert cm.flash(bits, channel) == total + folded_bytes + shortfall
    assert rodata_bytes(lm)["params"] <= cm.fixed


def test_smallest_model_of_paper_mnist_is_the_one_bit_model():
    from siq.training.arch import load_arch
    cm = cost_model(load_arch("paper-mnist"))
    assert cm.smallest_flash() == cm.flash({l.index: 1 for l in cm.layers})
    # 22,278 parameters: 22,000 weights at 1 bit (2,750 B) and four 2-entry codebooks on top of the fixed part
    assert cm.smallest_flash() - cm.fixed == sum((l.weights + 7) // 8 + 2 for l in cm.layers)
    assert cm.flash({l.index: 1 for l in cm.layers}, frozenset({0})) == cm.smallest_flash() + 2 * 5


# ---------------------------------------------------------------- solvers

def instances(costs: int):
    choice = st.tuples(st.tuples(*[st.integers(0, 60)] * costs), st.floats(-1, 5, allow_nan=False))
    layers = st.lists(st.lists(choice, min_size=1, max_size=5), min_size=1, max_size=4)
    return st.tuples(layers, st.tuples(*[st.integers(0, 200)] * costs))


def as_choices(layers):
    return [[Choice(layer, bits, False, costs, loss) for bits, (costs, loss) in enumerate(options, 1)]
            for layer, options in enumerate(layers)]


@pytest.mark.parametrize("costs", [1, 2])
@given(data=st.data())
def test_exact_solver_finds_what_brute_force_finds(costs, data):
    layers, budgets = data.draw(instances(costs))
    options = as_choices(layers)
    best, found = brute_force(options, budgets), exact(options, budgets)
    if best is None:
        assert found == []
        return
    assert found and abs(found[0].sensitivity - best.sensitivity) < 1e-9
    sensitivities = [a.sensitivity for a in found]
    assert sensitivities == sorted(sensitivities)
    assert all(all(c <= b for c, b in zip(a.costs, budgets)) for a in found)
    if costs == 1:  # greedy fits whenever anything fits, and is never better than the optimum
        ablation = greedy(options, budgets)
        assert ablation is not None and ablation.costs[0] <= budgets[0]
        assert ablation.sensitivity >= best.sensitivity - 1e-9


# ---------------------------------------------------------------- budgets and configuration files

@pytest.mark.parametrize("text, value", [("6144", 6144), ("6KB", 6144), ("6 KiB", 6144), ("6k", 6144),
                                         ("1.5K", 1536), ("2MB", 2 * 2**20), ("100 B", 100)])
def test_sizes_read_as_written(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text, value", [("300000", 300_000), ("300k", 300_000), ("1.2M", 1_200_000)])
def test_instruction_counts_read_as_written(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text, message", [("0", "more than zero"), ("-6KB", "more than zero"),
                                           ("6 XB", "a number with an optional unit"), ("", "a number"),
                                           ("1.1B", "whole number"), ("nan", "a number"), ("inf", "a number")])
def test_bad_sizes_refused(text, message):
    with pytest.raises(SiqError, match=message):
        parse_size(text)


def test_instruction_budget_needs_a_core():
    with pytest.raises(SiqError, match="--cpu"):
        Budget(4096, insns=300_000)


def test_configuration_file_round_trips(tmp_path):
    cfg = QuantizeConfig(method="siq+", layer_bits={0: 2, 4: 3}, channel_layers=[4], act_bits=3)
    write_config(cfg, tmp_path / "c.json")
    assert read_config(tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text(json.dumps({"layer_bits": {"0": 9}}))
    with pytest.raises(SiqError, match="layer_bits of layer 0 must be a whole number from 1 to 8"):
        read_config(tmp_path / "bad.json")
    (tmp_path / "typo.json").write_text(json.dumps({"layer_bit": {}}))
    with pytest.raises(SiqError, match="unknown setting"):
        read_config(tmp_path / "typo.json")


# ---------------------------------------------------------------- end to end

def test_fit_mixes_widths_within_budget_and_quantize_reads_its_config_back(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(TINY)
    out = tmp_path / "fit"
    # one width for all layers: 3 bits take 857 B (predicted), 4 bits 1,022 B; 1,000 B needs a mix
    code = main(["fit", "--dataset", "digits", "--arch", str(tmp_path / "tiny.toml"), "--flash", "1000",
                 "--method", "kmeans", "--epochs", "3", "--widths", "3-4", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "fit.json").read_text())
    measured = report["measured"]
    assert measured["linked"] and measured["flash"] <= 1000 and measured["flash"] <= measured["predicted_flash"]
    widths = set(report["config"]["layer_bits"].values())
    assert len(widths) > 1, report["config"]
    assert report["best_single_width"] == 3
    assert report["greedy"] is not None
    assert set(report["sensitivity"]["points"]) == {"-1", "1", "4", "7"}  # the input and every relu
    text = (out / "report.md").read_text()
    assert "| layer | kind | weights | bits |" in text and "greedy" in text
    # the configuration file gives back the same model, byte for byte
    again = tmp_path / "again.pt"
    assert main(["quantize", str(out / "float.pt"), "--config", str(out / "fit-config.json"),
                 "--out", str(again)]) == 0
    assert again.read_bytes() == (out / "quantized.pt").read_bytes()
    # and refuses options that the file would silently override
    assert main(["quantize", str(out / "float.pt"), "--config", str(out / "fit-config.json"), "--weight-bits",
                 "2", "--out", str(tmp_path / "x.pt")]) == 2
    assert "drop --weight-bits" in capsys.readouterr().err


def test_instruction_estimate_is_within_five_percent_of_qemu(tmp_path):
    """The committed per-kernel costs against an exact count of a model they were not calibrated on (mixed
    widths, a per-channel layer, the tiny network's reference convs)."""
    from siq.codegen.fit.cost import stand_in
    from siq.codegen.fit.insns import load_instruction_model
    from siq.codegen.target.qemu import instructions_per_inference
    from siq.training.arch import load_arch
    (tmp_path / "tiny.toml").write_text(TINY)
    arch = load_arch(str(tmp_path / "tiny.toml"))
    bits = {0: 3, 3: 5, 6: 2, 8: 7}
    lm = lower(stand_in(arch, bits, per_channel={3}))
    write_sources(lm, tmp_path)
    counted = instructions_per_inference(tmp_path, lm.prefix, "cortex-m4", None,
                                         np.full(64, 200, np.uint8))["total"]
    model, cm = load_instruction_model("cortex-m4"), cost_model(arch)
    estimate = model.fixed(cm) + sum(model.layer(cm, i, b) for i, b in bits.items())
    assert abs(estimate - counted) <= 0.05 * counted, (estimate, counted)


def fit_study(tmp_path: Path, budgets: str) -> Path:
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "tiny-fit.toml"
    path.write_text(f'question = "q"\n[defaults]\ndataset = "digits"\narch = "{tmp_path / "tiny.toml"}"\n'
                    f'epochs = 1\nseeds = [0]\n[[fit]]\nresults = "tiny-fit.jsonl"\nmethod = "kmeans"\n'
                    f'budgets = {budgets}\nsolvers = ["exact"]\nwidths = "3-4"\nvalidation = 0.1\n'
                    f'report = "tiny-fit"\ntitle = "Tiny fit"\n')
    (tmp_path / "results").mkdir()
    return path


def test_study_fit_runs_the_fit_beside_the_best_single_width(tmp_path, capsys):
    path = fit_study(tmp_path, '["1000"]')
    args = ["study", "run", str(path), "--cache-dir", str(tmp_path / "cache"), "--results-dir",
            str(tmp_path / "results")]
    assert main(args) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "results" / "tiny-fit.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["solver"], r["budget"]) for r in records] == [("fit", "exact", 1000), ("single", None, 1000)]
    assert all(r["linked"] and r["flash"] <= 1000 for r in records)
    assert set(records[1]["bits"].values()) == {3} and set(records[0]["bits"].values()) <= {3, 4}
    report = (tmp_path / "tiny-fit" / "README.md").read_text()  # the report beside the study's folder
    assert report.startswith("# Tiny fit") and (tmp_path / "tiny-fit" / "accuracy-vs-flash.png").stat().st_size
    assert f"| 1,000 | best single width | 3 bits | {records[1]['flash']:,} |" in report
    # every cell is cached: a second run trains nothing and writes the same file
    first = (tmp_path / "results" / "tiny-fit.jsonl").read_bytes()
    assert main(args) == 0
    assert (tmp_path / "results" / "tiny-fit.jsonl").read_bytes() == first


def test_study_budget_below_the_smallest_model_is_refused_before_training(tmp_path, capsys):
    path = fit_study(tmp_path, '["8KB", "300"]')
    assert main(["study", "run", str(path), "--cache-dir", str(tmp_path / "cache"), "--results-dir",
                 str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    smallest = cost_model(Arch.from_dict(tomllib.loads(TINY))).smallest_flash()  # its 1-bit model, as linked
    assert len(err) == 1 and f"flash budget 300 B is below the smallest model of 'tiny': {smallest:,} B" in err[0], err
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "results").iterdir())


def test_a_candidate_measured_over_budget_gives_way_to_the_next(digits, tmp_path, monkeypatch):
    """The first candidate is made to measure one byte over the budget: the fit takes the second, and a fit
    where every candidate is over refuses instead of returning one."""
    import siq.codegen.fit.run as run
    from siq.codegen.fit.budget import Budget
    from siq.training.train import TrainConfig
    arch = tiny_arch(lrn=False)
    torch.manual_seed(0)
    real, calls = run.measure, []

    def first_over(qm, cpu, image=None):
        measured = real(qm, None)
        calls.append(measured)
        return {**measured, "flash": 1000 + 1} if len(calls) == 1 else measured
    monkeypatch.setattr(run, "measure", first_over)
    base = QuantizeConfig(method="kmeans", calibration_images=100)
    kwargs = dict(widths=[3, 4], per_channel=(False,), cache_dir=tmp_path, net=Net(arch), log=lambda *a: None)
    result, _ = run.fit_model(arch, digits, Budget(1000), base, TrainConfig(epochs=1), **kwargs)
    assert [t["over"] != [] for t in result.tried] == [True, False]
    assert result.measured["flash"] <= 1000 and result.config.layer_bits != {}
    monkeypatch.setattr(run, "measure", lambda qm, cpu, image=None: {**real(qm, None), "flash": 10**6})
    with pytest.raises(SiqError, match=r"none of the \d+ best configurations of .tiny. fits flash 1,000 B when measured"):
        run.fit_model(arch, digits, Budget(1000), base, TrainConfig(epochs=1), **kwargs)


def test_hutchinson_trace_matches_the_exact_hessian_diagonal(digits):
    """Two ways: the estimator's mean diagonal of the first conv's Hessian against the exact one (the whole
    36 x 36 block from one Hessian-vector product per weight), on an untrained tiny net, within four standard
    deviations of the estimator (Rademacher: var(v^T H v) = 2 sum of the squared off-diagonal entries)."""
    from siq.codegen.fit.sensitivity import hessian_traces
    from siq.training.nets import images_to_input
    torch.manual_seed(0)
    net = Net(tiny_arch(lrn=False)).eval()
    x, y = digits.train_x[:50], digits.train_y[:50]
    samples = 60
    estimate = hessian_traces(net, x, y, samples=samples)[0]
    w = net.layers[0].weight
    loss = torch.nn.functional.cross_entropy(net(images_to_input(x)), torch.as_tensor(y))
    (grad,) = torch.autograd.grad(loss, [w], create_graph=True)
    rows = []
    for k in range(w.numel()):
        unit = torch.zeros(w.numel())
        unit[k] = 1.0
        (hv,) = torch.autograd.grad(grad, [w], grad_outputs=unit.reshape(w.shape), retain_graph=True)
        rows.append(hv.reshape(-1).double())
    hessian = torch.stack(rows)
    n = w.numel()
    exact_mean = float(torch.diagonal(hessian).sum()) / n
    off = hessian - torch.diag(torch.diagonal(hessian))
    std = float(torch.sqrt(2 * (off ** 2).sum() / samples)) / n
    assert exact_mean > 0 and abs(estimate - exact_mean) <= 4 * std, (estimate, exact_mean, std)
    assert std < exact_mean  # the check has teeth: four deviations do not cover every sign error


# ---------------------------------------------------------------- per-point activation widths

def synthetic_sensitivities(arch: Arch, point_rises: dict) -> dict:
    """Weights: a layer loses 1/bits at each width (per channel: half that); points: point_rises[p][w]."""
    layers = {l: {**{str(b): 1.0 / b for b in range(1, 9)}, **{f"{b}/channel": 0.5 / b for b in range(1, 9)}}
              for l in arch.folded().weighted_layers()}
    return {"baseline": 0.0, "layers": layers, "hessian": layers, "points": point_rises}


def test_point_options_keep_the_best_width_of_each_storage():
    sens = {"points": {-1: {str(w): 0.0 for w in range(1, 9)},
                       1: {"1": 0.9, "2": 0.5, "3": 0.2, "4": 0.3, "5": 0.1, "6": 0.05, "7": 0.05, "8": 0.01},
                       4: {"1": 0.9, "2": 0.5, "3": 0.2, "4": 0.1, "5": 0.1, "6": 0.05, "7": 0.05, "8": 0.05}}}
    # packed (<= 4 bits): the least rise (3 bits beats 4 at point 1); bytes: the least rise, wider on a tie
    assert point_options(sens, range(1, 9), 4) == {1: [3, 8], 4: [4, 8]}
    assert point_options(sens, [2, 4], 4) == {1: [4], 4: [4]}
    assert point_options(sens, [6], 4) == {1: [6], 4: [6]}


def test_plan_gives_wide_activations_where_the_ram_budget_allows():
    arch = tiny_arch(lrn=False)
    points = quantization_points(arch)
    rises = {-1: {str(w): 0.0 for w in range(1, 9)}}
    rises.update({p: {str(w): (0.0 if w > 4 else 0.5 + 0.1 * k) for w in range(1, 9)} for k, p in enumerate(points)})
    sens = synthetic_sensitivities(arch, rises)
    base = QuantizeConfig(method="kmeans", act_bits=4)
    packed = cost_model(arch, 4).arena_bytes
    wide = cost_model(arch, 4, point_widths={p: 8 for p in points}).arena_bytes
    assert packed < wide
    free = plan(arch, base, sens, Budget(10**6, wide), range(1, 9), (False, True), [4, 8], None)
    assert free[0][1] == {p: 8 for p in points}  # nothing to lose: every point wide
    # a RAM budget below the all-wide arena: every candidate's arena fits it, and the plan is the best that does
    budget = Budget(10**6, (packed + wide) // 2)
    candidates = plan(arch, base, sens, budget, range(1, 9), (False, True), [4, 8], None)
    assert candidates and all(cm.arena_bytes <= budget.ram for _, _, _, cm in candidates)
    best = candidates[0]
    assert best[1] and best[1] != {p: 8 for p in points}
    fitting = [dict(zip(points, combo)) for combo in itertools.product([4, 8], repeat=len(points))
               if cost_model(arch, 4, point_widths={p: w for p, w in zip(points, combo) if w == 8}).arena_bytes
               <= budget.ram]
    least = min(sum(rises[p][str(w)] - rises[p]["4"] for p, w in c.items()) for c in fitting)
    assert best[0] == pytest.approx(best[2].sensitivity + least)


def test_act_width_search_is_refused_before_training_when_it_cannot_fit(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(TINY)
    args = ["fit", "--dataset", "digits", "--arch", str(tmp_path / "tiny.toml"), "--flash", "4KB", "--method",
            "kmeans", "--act-bits", "8", "--out", str(tmp_path / "fit")]
    narrow = cost_model(Arch.from_dict(tomllib.loads(TINY)), 8, point_widths={1: 2, 4: 2, 7: 2}).arena_bytes
    assert main(args + ["--act-widths", "2,8", "--ram", str(narrow - 1)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"below the activation arena of 'tiny' at 2-bit activations: {narrow:,} B" in err[0], err
    assert main(args + ["--act-widths", "0-3"]) == 2
    assert "--act-widths wants widths 1..8" in capsys.readouterr().err
    assert not (tmp_path / "fit").exists()


def test_too_many_act_width_combinations_are_refused():
    wide = Arch.from_dict({"name": "deep", "input": [1, 8, 8], "layers": [
        layer for _ in range(13) for layer in ({"type": "conv", "out": 2, "k": 1}, {"type": "relu"})] +
        [{"type": "flatten"}, {"type": "dense", "out": 10}]})
    check_point_search(wide, [8])  # one storage: one combination
    with pytest.raises(SiqError, match=r"--act-widths: 'deep' has 13 stored feature maps, 8,192 width combinations"):
        check_point_search(wide, [4, 8])


def test_fit_with_act_widths_gives_points_their_own_width(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(TINY)
    out = tmp_path / "fit"
    code = main(["fit", "--dataset", "digits", "--arch", str(tmp_path / "tiny.toml"), "--flash", "4KB",
                 "--method", "kmeans", "--epochs", "2", "--act-bits", "2", "--act-widths", "2,8", "--widths", "4",
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "fit.json").read_text())
    # no RAM budget: a byte-wide point costs nothing the budgets count, and 8 bits lose less than 2
    assert report["point_widths"] == {"1": 8, "4": 8, "7": 8} == \
        {k: v for k, v in report["config"]["point_widths"].items()}
    assert "The fit gives point 1 8 bits, point 4 8 bits, point 7 8 bits" in (out / "report.md").read_text()
    again = tmp_path / "again.pt"
    assert main(["quantize", str(out / "float.pt"), "--config", str(out / "fit-config.json"),
                 "--out", str(again)]) == 0
    assert again.read_bytes() == (out / "quantized.pt").read_bytes()


def test_fit_cell_keys_leave_out_fields_at_their_neutral_value():
    """A cached fit cell keeps its key when QuantizeConfig gains a field: point widths count only when given."""
    plain = _config_text(QuantizeConfig(method="siq+", per_channel="none"))
    assert "point_widths" not in plain and '"per_channel": "none"' in plain
    assert '"point_widths": {"1": 8}' in _config_text(QuantizeConfig(method="siq+", point_widths={1: 8}))
