"""LoRA unlearning (untrac.lora): one SGD step = full unlearning of the targeted weights, only the
adapter trains, θ0 is never touched, and a target that matches nothing is one clear error.

Tiny float64 T5 / OPT (d_model 8): the shipped r = 8 is their full rank (d_in = 8), alpha = 16.
"""

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "methods"))
sys.path.insert(0, str(Path(__file__).parent))  # test_run: the CLI helpers
from methods_tiny import make_inputs, one_thread, task, tiny, tiny_gpt2  # noqa: E402,F401  (one_thread: autouse fixture)

from untrac.config import LoraConfig, OptimConfig, UnlearnConfig  # noqa: E402
from untrac.data.collate import collate  # noqa: E402
from untrac.errors import UntracError  # noqa: E402
from untrac.losses import batch_loss  # noqa: E402
from untrac.lora import adapted, record_lora_coverage, target_modules  # noqa: E402
from untrac.methods.untrac import piece_fields, score_untrac  # noqa: E402
from untrac.prepared import EvalBatches, TokenRows  # noqa: E402
from untrac.unlearn import UnlearnPlan, unlearn_fast  # noqa: E402

LR = 1e-2
ARCHS = ["seq2seq", "causal"]


def _targets(model, cfg=LoraConfig()) -> dict[str, torch.nn.Linear]:
    names = target_modules(model, cfg)
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and any(n == t or n.endswith("." + t) for t in names)}


def _adapters(wrapped) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """Targeted module name (as in θ0) → (base W, A, B, scaling) of a peft-wrapped model."""
    out = {}
    for name, m in wrapped.named_modules():
        if hasattr(m, "lora_A") and "default" in m.lora_A:
            plain = name.removeprefix("base_model.model.")
            out[plain] = (m.base_layer.weight, m.lora_A["default"].weight, m.lora_B["default"].weight,
                          m.scaling["default"])
    return out


def _rel(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm()).item()


def _run(model, arch, forget, cfg: UnlearnConfig, optim: OptimConfig):
    plan = UnlearnPlan(arch=arch, device=torch.device("cpu"), optim=optim, schedule=cfg, seed=0)
    return unlearn_fast(model, TokenRows.of(forget), {}, plan, start={})


def _grads(model, arch, forget, names) -> dict[str, torch.Tensor]:
    """∂L/∂W of the mean loss over the whole set, plain autograd (the independent reference)."""
    batch = collate(forget[list(range(len(forget)))], arch.pad_id)
    weights = [dict(model.named_modules())[n].weight for n in names]
    return dict(zip(names, torch.autograd.grad(batch_loss(model, batch, arch), weights)))


@pytest.mark.parametrize("arch_name", ARCHS)
@pytest.mark.parametrize("init", ["orthonormal", "kaiming"])
def test_one_sgd_step_moves_the_effective_weight_by_lr_s2_grad_AtA(arch_name, init):
    """ΔW_eff = η·s²·G·AᵀA exactly for one step (A's gradient is 0 at B = 0); with ``orthonormal``
    at full rank s²·AᵀA = I, i.e. exactly the full-unlearning step η·G of the targeted weights."""
    model, arch, tok = tiny(arch_name)
    forget = next(iter(task(tok, arch)[0].values()))
    cfg = UnlearnConfig(params="lora", lora=LoraConfig(init=init), batch_size=len(forget), max_steps=1)
    names = list(_targets(model))
    grads = _grads(model, arch, forget, names)
    with adapted(model, cfg.lora, seed=0) as wrapped:
        before = {n: a.detach().clone() for n, (_, a, _, _) in _adapters(wrapped).items()}
        _run(wrapped, arch, forget, cfg, OptimConfig(name="sgd", lr=LR))
        after = _adapters(wrapped)
    assert sorted(after) == sorted(names) and len(names) >= 2
    for n in names:
        w, a, b, s = after[n]
        assert torch.equal(a, before[n])  # A does not move in the first step: its gradient s·Bᵀ·G is 0
        delta = s * b @ a  # W_eff − W (B was 0)
        expected = LR * s**2 * grads[n] @ a.T @ a  # ascent: +η·∂L/∂W_eff·(s²AᵀA)
        assert expected.norm() > 0 and _rel(delta, expected) < 1e-10, (n, _rel(delta, expected))
        if init == "orthonormal":  # s²AᵀA = I at r = d_in = 8: the full step itself
            assert torch.allclose(s**2 * a.T @ a, torch.eye(a.shape[1], dtype=a.dtype), atol=1e-12)
            assert _rel(delta, LR * grads[n]) < 1e-10, (n, _rel(delta, LR * grads[n]))


@pytest.mark.parametrize("arch_name", ARCHS)
def test_lora_untrac_equals_full_untrac_on_the_targeted_weights_after_one_sgd_step(arch_name):
    """§4.3's single-step limit through the shipped path (score_untrac): LoRA (orthonormal A, full
    rank) vs full unlearning with every weight but the targeted ones frozen, one SGD step."""
    model, arch, tok = tiny(arch_name)
    train, test = task(tok, arch)
    n = len(next(iter(train.values())))
    lora = UnlearnConfig(params="lora", lora=LoraConfig(init="orthonormal"), batch_size=n, max_steps=1,
                         eval_batch_size=8, workers="1")
    inputs = make_inputs(model, arch, train, test, name="untrac")
    # One step is exact at any lr: a large one lifts the loss changes far above float32 rounding.
    inputs.optim, inputs.unlearn = OptimConfig(name="sgd", lr=1.0), lora
    got = score_untrac(inputs)

    restricted = copy.deepcopy(model)
    keep = {f"{n}.weight" for n in _targets(model)}
    for name, p in restricted.named_parameters():
        p.requires_grad_(name in keep)
    ref_inputs = make_inputs(restricted, arch, train, test, name="untrac")
    ref_inputs.optim = OptimConfig(name="sgd", lr=1.0)
    ref_inputs.unlearn = UnlearnConfig(batch_size=n, max_steps=1, eval_batch_size=8, workers="1")
    expected = score_untrac(ref_inputs)

    final_got, final_exp = got[got.is_final].influence.to_numpy(), expected[expected.is_final].influence.to_numpy()
    assert abs(final_exp).max() > 1e-3  # a real loss change to compare
    # Losses are float32 cross-entropies (untrac.losses), so the floor is float32 rounding, not 1e-16.
    print("influence", final_exp, "LoRA − full", final_got - final_exp)
    assert abs(final_got - final_exp).max() <= 1e-9 * abs(final_exp).max(), (final_got, final_exp)


@pytest.mark.parametrize("arch_name", ARCHS)
def test_later_steps_depart_from_full_unlearning_by_eta_squared(arch_name):
    """From step 2 on A moves too (by η·s·Bᵀ·G, B being η·s·G₁·Aᵀ): W_eff gains
    s·B·ΔA = η³·s²·G₁G₁ᵀG₂ and kin, so after 3 SGD steps ‖ΔW_lora − ΔW_full‖/‖ΔW_full‖ ∝ η²: 100× smaller at η/10."""
    model, arch, tok = tiny(arch_name)
    forget = next(iter(task(tok, arch)[0].values()))
    cfg = UnlearnConfig(params="lora", lora=LoraConfig(init="orthonormal"), batch_size=len(forget), epochs=3)
    targets = _targets(model)
    # The gap is governed by η·s·‖G‖, so the lrs are set from it (0.01, then 0.001).
    g = torch.cat([v.flatten() for v in _grads(model, arch, forget, list(targets)).values()]).norm().item()
    scale = cfg.lora.alpha / cfg.lora.r * g
    gaps = []
    for lr in (1e-2 / scale, 1e-3 / scale):
        full = copy.deepcopy(model)
        keep = {f"{n}.weight" for n in targets}
        for name, p in full.named_parameters():
            p.requires_grad_(name in keep)
        _run(full, arch, forget, cfg, OptimConfig(name="sgd", lr=lr))
        with adapted(model, cfg.lora, seed=0) as wrapped:
            _run(wrapped, arch, forget, cfg, OptimConfig(name="sgd", lr=lr))
            lora = {n: s * b @ a for n, (_, a, b, s) in _adapters(wrapped).items()}
        moved = dict(full.named_modules())
        full_delta = torch.cat([(moved[n].weight - m.weight).flatten() for n, m in targets.items()])
        lora_delta = torch.cat([lora[n].flatten() for n in targets])
        gaps.append(((lora_delta - full_delta).norm() / full_delta.norm()).item())
    print("relative gap after 3 steps", gaps)
    assert 1e-8 < gaps[0] < 0.01 and 80 < gaps[0] / gaps[1] < 125, gaps


@pytest.mark.parametrize("arch_name", ARCHS)
def test_only_adapter_weights_change_and_theta0_is_untouched(arch_name):
    """At the shipped defaults (Adam, peft's kaiming-A zero-B init, r 8, alpha 16, auto targets)."""
    model, arch, tok = tiny(arch_name)
    train, test = task(tok, arch)
    forget = next(iter(train.values()))
    theta0 = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    cfg = UnlearnConfig(params="lora", batch_size=2, epochs=2)
    evals = {"t": EvalBatches.of(next(iter(test.values())), arch, 8, torch.device("cpu"))}
    with adapted(model, cfg.lora, seed=0) as wrapped:
        start = {n: a.detach().clone() for n, a in wrapped.named_parameters() if "lora_" in n}
        traj = unlearn_fast(wrapped, TokenRows.of(forget), evals,
                            UnlearnPlan(arch=arch, device=torch.device("cpu"), optim=OptimConfig(lr=1e-3),
                                        schedule=cfg, seed=0))
        trained = {n for n, p in wrapped.named_parameters() if p.requires_grad}
        moved = {n for n, p in wrapped.named_parameters() if "lora_" in n and not torch.equal(p, start[n])}
        base = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
                for n, p in wrapped.named_parameters() if "lora_" not in n}
    assert trained == set(start) and moved == set(start)  # every A and B moved (A from step 2 on)
    assert set(base) <= set(theta0) and len(base) == len(list(model.named_parameters()))
    assert all(torch.equal(base[k], theta0[k]) for k in base)  # bit-identical base weights
    assert all(torch.equal(v, theta0[k]) for k, v in model.state_dict().items())  # θ0 itself untouched
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags  # peft's freeze undone
    assert not any("lora" in n for n, _ in model.named_modules())  # θ0 carries no adapter
    losses = traj.frame().set_index("step").loss
    assert losses.iloc[-1] > losses.iloc[0]  # it did unlearn


def test_adapter_starts_at_theta0_and_is_seeded():
    model, arch, tok = tiny("seq2seq")
    batch = collate(next(iter(task(tok, arch)[1].values()))[[0, 1]], arch.pad_id)
    with torch.no_grad():
        plain = batch_loss(model, batch, arch)
        with adapted(model, LoraConfig(), seed=3) as one:
            a1 = [p.clone() for n, p in one.named_parameters() if "lora_A" in n]
            assert torch.equal(batch_loss(one, batch, arch), plain)  # B = 0: exactly θ0
        with adapted(model, LoraConfig(), seed=3) as two:
            assert all(torch.equal(x, y) for x, (n, y) in zip(a1, [(n, p) for n, p in two.named_parameters()
                                                                   if "lora_A" in n]))


def test_auto_targets_are_peft_defaults_per_model_type():
    assert target_modules(tiny("seq2seq")[0], LoraConfig()) == ["q", "v"]
    assert target_modules(tiny("causal")[0], LoraConfig()) == ["q_proj", "v_proj"]



def test_gpt2_conv1d_is_adapted_and_one_step_is_full_unlearning_of_it():
    """peft adapts Conv1D (W stored transposed) with fan_in_fan_out: auto targets GPT-2's c_attn, and
    at full rank one SGD step of the adapter moves the stored weight by exactly η·∂L/∂W, as for Linear."""
    model, arch, tok = tiny_gpt2()
    forget = next(iter(task(tok, arch)[0].values()))
    cfg = UnlearnConfig(params="lora", lora=LoraConfig(init="orthonormal"), batch_size=len(forget), max_steps=1)
    assert target_modules(model, cfg.lora) == ["c_attn"]
    assert target_modules(model, LoraConfig(target_modules=["c_fc", "c_proj"])) == ["c_fc", "c_proj"]
    conv = {"transformer.h.0.attn.c_attn": model.transformer.h[0].attn.c_attn}
    grads = dict(zip(conv, torch.autograd.grad(batch_loss(model, collate(forget[list(range(len(forget)))], 0), arch),
                                               [m.weight for m in conv.values()])))
    with adapted(model, cfg.lora, seed=0) as wrapped:
        _run(wrapped, arch, forget, cfg, OptimConfig(name="sgd", lr=LR))
        after = _adapters(wrapped)
    assert sorted(after) == sorted(conv)
    w, a, b, s = after["transformer.h.0.attn.c_attn"]
    delta = (s * b @ a).T  # Conv1D stores [in, out]: W_eff' = W' + s·(B·A)ᵀ
    expected = LR * grads["transformer.h.0.attn.c_attn"]
    assert delta.shape == w.shape and expected.norm() > 0 and _rel(delta, expected) < 1e-10


def test_lora_coverage_counts_the_targeted_weights():
    model, _, _ = tiny_gpt2()
    counters = {}
    assert record_lora_coverage(model, LoraConfig(), counters) == ["c_attn"]
    total = sum(p.numel() for p in model.parameters())  # wte and the tied lm_head once
    assert counters == {"params_covered": 8 * 24, "params_total": total, "params_share": 8 * 24 / total,
                        "params_covered_by": "LoRA (r=8): the weights of 1 of 10 modules"}


def test_no_matching_module_is_an_error_naming_the_pattern_and_what_exists():
    with pytest.raises(UntracError) as err:
        target_modules(tiny("causal")[0], LoraConfig(target_modules=["q_proj", "nope"]))
    message = str(err.value)
    assert "'nope'" in message and "'q_proj'" not in message.split("linear layers")[0]
    assert "q_proj" in message and "fc1" in message and "\n" not in message


@pytest.mark.parametrize("kwargs,culprit", [
    ({"r": 0}, "unlearn.lora.r"), ({"alpha": 0}, "unlearn.lora.alpha"), ({"target_modules": []}, "target_modules"),
    ({"init": "pissa"}, "unlearn.lora.init"),
])
def test_lora_config_is_range_checked(kwargs, culprit):
    with pytest.raises(UntracError, match=culprit):
        LoraConfig(**kwargs)
    with pytest.raises(UntracError, match="unlearn.params"):
        UnlearnConfig(params="half")


def test_piece_key_full_unchanged_lora_keyed_by_its_settings():
    model, arch, tok = tiny("seq2seq")
    train, test = task(tok, arch)
    rows = TokenRows.of(next(iter(train.values())))
    inputs = make_inputs(model, arch, train, test, name="untrac")
    full = piece_fields(inputs, "untrac", rows, {})
    assert "params" not in full["unlearn"] and "lora" not in full["unlearn"]  # keys as before LoRA
    inputs.unlearn = UnlearnConfig(params="lora")
    r8 = piece_fields(inputs, "untrac", rows, {})
    inputs.unlearn = UnlearnConfig(params="lora", lora=LoraConfig(r=4))
    assert r8 != full and piece_fields(inputs, "untrac", rows, {}) != r8


@pytest.mark.slow
def test_cli_lora_target_matching_nothing_is_exit_code_1_and_one_line(tmp_path):
    from test_run import SMALL, error_lines, untrac

    proc = untrac("unlearn.params=lora", "unlearn.lora.target_modules=[nope]", *SMALL, tmp=tmp_path, timeout=300)
    lines = error_lines(proc)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(lines) == 1 and "unlearn.lora.target_modules" in lines[0] and "'nope'" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "θ−" not in proc.stderr  # it failed before the ground truth's θ−Z trainings


@pytest.mark.slow
def test_lora_in_worker_processes_and_from_the_cache_gives_the_same_numbers(tmp_path):
    """The adapter's A is drawn from the run's seed, so a worker process builds the same adapter;
    a finished LoRA piece is reused, and another rank is another piece."""
    import dataclasses

    from untrac.cache import Cache
    from untrac.pieces import PieceStore

    model, arch, tok = tiny("seq2seq")
    train, test = task(tok, arch)
    inputs = make_inputs(model, arch, train, test, name="untrac")
    inputs.unlearn = UnlearnConfig(params="lora", eval_every=2, workers="1")
    one = score_untrac(inputs)
    two = score_untrac(dataclasses.replace(inputs, counters={},
                                           unlearn=dataclasses.replace(inputs.unlearn, workers="2")))
    assert one.equals(two) and one.influence.abs().max() > 0
    store = PieceStore(Cache(tmp_path), {"theta0": "test"})
    first = score_untrac(dataclasses.replace(inputs, counters={}, store=store))
    counters: dict = {}
    again = score_untrac(dataclasses.replace(inputs, counters=counters, store=store))
    assert first.equals(one) and again.equals(one) and counters["pieces_reused"] == len(train)
    rank4 = dataclasses.replace(inputs.unlearn, lora=LoraConfig(r=4))
    score_untrac(dataclasses.replace(inputs, counters={}, store=store, unlearn=rank4))
    assert len(list((tmp_path / "pieces").iterdir())) == 2 * len(train)


def test_lora_keys_compose_from_the_command_line(compose):
    from untrac.checks import typed

    def load(*overrides):
        return typed(compose(*overrides))

    cfg = load()
    assert cfg.unlearn.params == "full" and cfg.unlearn.lora == LoraConfig(r=8, alpha=16.0, target_modules="auto")
    cfg = load("unlearn.params=lora", "unlearn.lora.r=4", "unlearn.lora.alpha=8", "unlearn.lora.target_modules=[q,k]",
               "unlearn.lora.init=orthonormal")
    assert (cfg.unlearn.params, cfg.unlearn.lora.r, cfg.unlearn.lora.alpha) == ("lora", 4, 8.0)
    assert cfg.unlearn.lora.target_modules == ["q", "k"] and cfg.unlearn.lora.init == "orthonormal"
    assert load("unlearn.lora.target_modules=wo").unlearn.lora.target_modules == ["wo"]
    with pytest.raises(Exception, match="unlearn.params"):
        load("unlearn.params=half")
