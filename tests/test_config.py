"""The composed config: every group option loads, and bad values fail with a message naming the key."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
import yaml
from omegaconf import OmegaConf

from untrac.checks import typed
from untrac.config import Config, OptimConfig, TrainConfig, UnlearnConfig
from untrac.errors import UntracError
from untrac.methods import registry

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def load(compose):
    """The typed, validated config of ``python -m untrac.run OVERRIDES``."""
    return lambda *overrides: typed(compose(*overrides))


def at_scale(name: str) -> tuple[str, str]:
    """"table2_paper" → experiment=table2 scale=paper."""
    target, scale = name.rsplit("_", 1)
    return f"experiment={target}", f"scale={scale}"


def test_default_is_the_embedded_job(load):
    cfg = load()
    assert (cfg.model.name, cfg.data.name, cfg.method.name, cfg.optim.name) == ("t5_tiny", "synthA", "untrac", "adam")
    assert cfg.optim.lr == 5e-5 and cfg.unlearn.batch_size == 1 and cfg.unlearn.epochs == 1


@pytest.mark.parametrize("group,options", [
    ("model", ["t5_tiny", "opt_tiny", "t5xl", "opt125m", ["local", "model.name_or_path=/ckpt", "groundtruth.mode=none"]]),
    ("method", sorted(registry())),
    ("optim", ["sgd", "sgd_momentum", "rmsprop", "adam", "adafactor"]),
])
def test_every_group_option_composes(group, options, load):
    for option in options:
        option, *more = [option] if isinstance(option, str) else option
        cfg = load(f"{group}={option}", *more)
        assert getattr(cfg, group).name == option


def test_pile8_needs_a_pile8_testset(load):
    assert load("data=pile8", "testset=toxigen").data.kind == "pile8"
    with pytest.raises(UntracError, match="testset"):
        load("data=pile8")


@pytest.mark.parametrize("scale,steps,lr,block", [("cpu", 1200, 2e-3, 128), ("paper", 40000, 5e-5, 1024)])
def test_data_pile8_alone_composes_its_scale(scale, steps, lr, block, load):
    """``data=pile8`` brings its scale's corpus sizes and pretraining (conf/scale/pile8_data/<scale>.yaml),
    the values every pile8 experiment trains with: not 40,000 steps under ``scale: cpu``."""
    alone = load("data=pile8", "testset=toxigen", f"scale={scale}")
    assert (alone.train.steps, alone.train.lr, alone.data.block_size) == (steps, lr, block)
    table3 = load("experiment=table3", f"scale={scale}")
    assert (alone.train, alone.data, alone.score) == (table3.train, table3.data, table3.score)


def test_pile8_training_is_set_in_one_file_per_scale():
    """Only conf/scale/pile8_data/<scale>.yaml sets pile8's pretraining; no other file of the family repeats it."""
    family = [CONF / "data" / "pile8.yaml", *sorted((CONF / "scale" / "pile8").glob("*.yaml")),
              *[CONF / "experiment" / f"{name}.yaml" for name in ("pile8", "table3", "table4", "table4_lr", "table5",
                                                                  "fig3", "fig3_b256", "fig4", "lds_pile8")]]
    for path in family:
        train = (yaml.safe_load(path.read_text()) or {}).get("train", {})
        assert not {"steps", "lr", "batch_size", "checkpoint_every"} & set(train), path.name
    for scale in ("cpu", "paper"):
        assert {"steps", "lr"} <= set(yaml.safe_load((CONF / "scale" / "pile8_data" / f"{scale}.yaml").read_text())["train"])


def test_untrac_inv_uses_the_paper_schedule(load):
    cfg = load("method=untrac_inv")
    assert (cfg.unlearn.batch_size, cfg.unlearn.epochs) == (256, 5)


@pytest.mark.parametrize("build,key", [
    (lambda: OptimConfig(lr=0), "optim.lr"),
    (lambda: OptimConfig(lr=-1e-5), "optim.lr"),
    (lambda: OptimConfig(name="lion"), "optim"),
    (lambda: TrainConfig(steps=-1), "train.steps"),  # 0 is allowed: θ0 is the given model
    (lambda: TrainConfig(clip_grad=0), "train.clip_grad"),
    (lambda: UnlearnConfig(batch_size=0), "unlearn.batch_size"),
    (lambda: Config(runs=0), "runs"),
])
def test_range_checks_name_the_key(build, key):
    with pytest.raises(UntracError, match=key.replace(".", r"\.")):
        build()


def test_every_failed_check_is_reported_at_once(load):
    with pytest.raises(UntracError) as err:
        load("optim.lr=0", "runs=0", "model.num_heads=0", "data.runs_vary=nosuch")
    lines = str(err.value).splitlines()
    assert lines[0] == "4 problems in the config:"
    assert sorted(line.split()[0] for line in lines[1:]) == ["data.runs_vary='nosuch'", "model.num_heads", "optim.lr",
                                                               "runs"]
    with pytest.raises(UntracError, match=r"^optim\.lr must be > 0, got 0\.0$"):  # one problem: just its line
        load("optim.lr=0")


def test_schema_rejects_unknown_keys_and_wrong_types(load):
    with pytest.raises(Exception, match="lrr"):
        load("optim.lrr=1")
    with pytest.raises(Exception, match="runs"):
        load("runs=abc")


@pytest.mark.parametrize("experiment", ["table2_paper", "fig2_paper", "fig2_inv_paper",
                                        "table2_cpu", "fig2_cpu", "fig2_inv_cpu"])
def test_synthetic_experiments_unlearn_with_adafactor(experiment, load):
    """§5: "Adafactor is used in Section 5.1 due to memory constraints", at the constant lr 5e-5."""
    cfg = load(*at_scale(experiment))
    assert (cfg.optim.name, cfg.optim.lr) == ("adafactor", 5e-5)


def test_pile8_experiments_unlearn_with_adam(load):
    cfg = load("experiment=table3", "scale=paper")
    assert (cfg.optim.name, cfg.optim.lr) == ("adam", 5e-5)


@pytest.mark.parametrize("experiment,model,steps,batch,optim", [
    ("table2_paper", "t5xl", 512, 2, "adafactor"),  # §5.1; authors' train_synthetic.sh
    ("table3_paper", "opt125m", 40000, 8, "adamw"),  # §5.2; authors' pretrain_opt.sh
    ("fig2_paper", "t5xl", 512, 2, "adafactor"),
    ("table4_paper", "opt125m", 40000, 8, "adamw"),
    ("fig3_paper", "opt125m", 40000, 8, "adamw"),
])
def test_paper_presets_train_as_the_authors_scripts(experiment, model, steps, batch, optim, load):
    """Where the paper is silent: their Trainer defaults (lr 5e-5 constant, max_grad_norm 1.0, fp32)."""
    cfg = load(*at_scale(experiment))
    assert (cfg.model.name, cfg.train.steps, cfg.train.batch_size, cfg.train.optim) == (model, steps, batch, optim)
    assert (cfg.train.lr, cfg.train.clip_grad, cfg.train.weight_decay, cfg.model.dtype) == (5e-5, 1.0, 0.0, "float32")


def test_hif_lissa_scale_is_auto_or_a_positive_number(load):
    assert load("method=hif_lissa").method.lissa_scale == "auto"
    assert load("method=hif_lissa", "method.lissa_scale=50").method.lissa_scale == 50
    for bad in ("abc", "-1"):
        with pytest.raises(UntracError, match=r"method\.lissa_scale"):
            load("method=hif_lissa", f"method.lissa_scale={bad}")
    with pytest.raises(UntracError, match=r"method\.variant"):
        load("method=hif_arnoldi", "method.variant=summed")


def test_own_files_and_checkpoint_compose_from_the_command_line(load):
    """Dict values given on the command line replace the presets' empty maps (Hydra's struct lock is off there)."""
    cfg = load("data=files", "data.train={news: /d/a.jsonl, code: 'b c.parquet'}", "testset=files",
               "testset.subsets={toxic: /d/t.jsonl}", "model=local", "model.name_or_path=/ckpt", "groundtruth.mode=none")
    assert cfg.data.train == {"news": "/d/a.jsonl", "code": "b c.parquet"} and cfg.data.kind == "files"
    assert cfg.testset.subsets == {"toxic": "/d/t.jsonl"} and cfg.train.steps == 0
    assert (cfg.model.arch, cfg.model.tokenizer) == ("auto", "/ckpt")  # the tokenizer defaults to the folder
    grouped = load("data=files", "data.path=/d/all.jsonl", "data.group_column=source", "testset=toxigen")
    assert (grouped.data.path, grouped.data.group_column, grouped.data.train) == ("/d/all.jsonl", "source", {})
    with pytest.raises(UntracError, match="model=local needs model.name_or_path"):
        load("model=local")
    with pytest.raises(UntracError, match="data=files needs data.train"):
        load("data=files", "testset=files", "testset.subsets={t: t.jsonl}")


def test_a_checkpoint_is_theta0_as_saved_unless_train_steps_is_given(load):
    """model=local: nothing is trained by default; the leave-dataset-out models then cannot exist."""
    local = ("model=local", "model.name_or_path=/ckpt")
    assert load(*local, "groundtruth.mode=none").train.steps == 0
    assert load(*local, "groundtruth.mode=none", "train.steps=7").train.steps == 7
    assert load(*local, "train.steps=7").groundtruth.mode == "fixed_steps"
    assert load().train.steps == 200  # a model built from scratch still trains
    for mode in ("fixed_steps", "all_examples"):
        with pytest.raises(UntracError, match=rf"^groundtruth\.mode={mode} trains leave-dataset-out models, which "
                           r"need train\.steps > 0 .*give train\.steps=<n> or groundtruth\.mode=none$"):
            load(*local, f"groundtruth.mode={mode}")


def test_theta0_is_stated_in_words(load):
    from untrac.config import theta0_text

    local = ("model=local", "model.name_or_path=/ckpt")
    as_saved = "checkpoint /ckpt as saved, not trained (train.steps=0)"
    assert theta0_text(load(*local, "groundtruth.mode=none")) == as_saved
    assert theta0_text(load(*local, "train.steps=5")) == "checkpoint /ckpt finetuned 5 steps"
    assert theta0_text(load()) == "t5_tiny trained 200 steps from random init"
    assert theta0_text(load("groundtruth.mode=all_examples", "train.epochs=2")) == (
        "t5_tiny trained 2 epoch(s) from random init")
    assert theta0_text(load("model=t5xl")).startswith("t5xl (pretrained google/t5-xl-lm-adapt) finetuned")
    assert theta0_text(load("model=t5_standin")) == (
        "t5_standin (pretrained 8000 steps on the stand-in corpus) finetuned 200 steps")


def test_a_recipe_key_on_a_preset_without_a_recipe_is_one_line(compose):
    """OmegaConf asserts (no error class) on a key set inside a null map; run.py and the planner say why."""
    from untrac.run import inside_null_map

    with pytest.raises(AssertionError) as err:
        compose("model.pretrain.lr=1")
    assert inside_null_map(err.value, ["model.pretrain.lr=1"]).startswith(
        "model.pretrain.* sets the pretraining recipe of a model preset that has none")
    assert inside_null_map(AssertionError("another"), ["model.pretrain.lr=1"]) is None


def test_a_random_model_may_read_with_the_stand_in_tokenizer(load):
    cfg = load("model.tokenizer=standin")
    assert cfg.model.pretrain is None and cfg.model.tokenizer == "standin"


@pytest.mark.parametrize("overrides,line", [
    (["seed=-1"], "seed=-1 must be >= 0"),
    (["seed=100000000000000"], "seed=100000000000000 is too large: the largest seed it gives, seed + (runs - 1) + "
                                 "1000·(groundtruth.seeds - 1) = 100000000000000, must be < 2**32"),
    (["seed=4294961000", "groundtruth.seeds=8"], "seed=4294961000 is too large"),  # its 8th truth seed is not
    (["data.seed=-3"], "data.seed=-3 must be in [0, 2**32)"),
    (["cache_dir="], "cache_dir is empty: give a folder (the default is outputs/cache)"),
    (["cache_dir= "], "cache_dir is empty"),
    (["data=files", "data.train={questions: q.jsonl, news: n.jsonl}", "testset=files",
      "testset.subsets={questions: t.jsonl}"],
     "testset.subsets.questions has the name of training dataset data.train.questions: rename one"),
    (["model=t5_standin", "model.arch=causal"], "model.pretrain builds a tiny seq2seq model with the stand-in "
                                                "tokenizer: it needs model.arch=seq2seq"),
    (["model=t5_standin", "model.tokenizer=byt5"], "model.pretrain builds a tiny seq2seq model"),
    (["model=t5_standin", "model.pretrain.steps=0"], "model.pretrain.steps must be > 0, got 0"),
    (["model=t5_standin", "model.pretrain.held_out=1"], "model.pretrain.held_out must be in [0, 1), got 1"),
    (["model=t5_standin", "model.pretrain.corpus=wiki"], "model.pretrain.corpus='wiki' is not one of standin"),
    (["model=t5_standin", "model.pretrain.n_max=1", "model.pretrain.held_out=0.9"],
     "model.pretrain.held_out=0.9 holds out every number up to model.pretrain.n_max=1"),
])
def test_values_no_schema_type_catches_are_one_line_naming_the_key(overrides, line, load):
    with pytest.raises(UntracError) as err:
        load(*overrides)
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_largest_seed_is_the_largest_truth_seed(load):
    """The seed check bounds exactly the seeds the ground truth uses (untrac.groundtruth.truth_seeds)."""
    from untrac.config import largest_seed
    from untrac.groundtruth import truth_seeds

    cfg = load("seed=5", "runs=3", "groundtruth.seeds=4")
    assert largest_seed(cfg) == max(s for run in range(3) for s in truth_seeds(cfg, run)) == 3007
    assert load("seed=4294967295").seed == 2**32 - 1  # numpy's largest seed, alone: accepted
    with pytest.raises(UntracError, match=r"^seed=4294967295 is too large"):
        load("seed=4294967295", "runs=2")


def test_method_options_and_the_registry_match(load):
    """Adding a method = its schema in untrac.method_config.SCHEMAS + its module + conf/method/<name>.yaml:
    every option composes to a registered method, every registered method has its option and the
    schema the config was composed with, and nothing else lists the names."""
    from untrac.method_config import SCHEMAS

    options = {path.stem: load(f"method={path.stem}").method for path in sorted((CONF / "method").glob("*.yaml"))}
    assert all(cfg.name in registry() and isinstance(cfg, registry()[cfg.name].config) for cfg in options.values())
    assert set(registry()) <= set(options)
    package = {name: m.config for name, m in registry().items() if m.score.__module__.startswith("untrac.methods.")}
    assert package == SCHEMAS
    assert options["hif_arnoldi_pile8"].name == "hif_arnoldi"  # a preset of a method (paper §5.2: n=200, p=100)
    assert (options["hif_arnoldi_pile8"].arnoldi_iterations, options["hif_arnoldi_pile8"].arnoldi_topk) == (200, 100)


def test_a_method_registering_another_schema_than_declared_is_refused(monkeypatch):
    from untrac.method_config import SCHEMAS, GradConfig, MethodConfig
    from untrac.methods import Method, register

    monkeypatch.setitem(SCHEMAS, "toy_declared", GradConfig)
    with pytest.raises(UntracError, match="registers MethodConfig, but untrac.method_config.SCHEMAS declares Grad"):
        register(Method("toy_declared", MethodConfig, lambda context: None))


def test_a_key_of_another_method_is_rejected(load):
    with pytest.raises(ConfigCompositionException, match=r"method\.lissa_iterations"):
        load("method=graddot", "method.lissa_iterations=3")
    appended = load("method=hif_lissa", "+method.fisher=empirical").method  # `+` gets past the schema,
    with pytest.raises(UntracError, match=r"method\.fisher is not a setting of method=hif_lissa"):
        registry()["hif_lissa"].settings(appended)  # not past the pipeline, before any training
    assert load("method=hif_lissa", "method.lissa_iterations=3").method.lissa_iterations == 3


def _method_yaml_repeats(path: Path, schema) -> list[str]:
    """Every value a conf/method/*.yaml sets that its method's schema (``method.*``) or the run's schema
    (any other key, e.g. untrac_inv's ``unlearn.*``) already has."""
    from untrac.optim_config import OPTIMIZERS

    values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
    repeats = [f"method.{k}" for k, v in values.pop("method", {}).items() if getattr(schema, k) == v]
    run = _leaves(OmegaConf.to_container(OmegaConf.structured(Config(optim=OPTIMIZERS["adam"]()))))
    return repeats + [k for k, v in _leaves(values).items() if k in run and run[k] == v]


def test_method_yaml_holds_only_what_differs_from_its_schema(load, tmp_path):
    repeats = {path.name: _method_yaml_repeats(path, registry()[load(f"method={path.stem}").method.name].config())
               for path in sorted((CONF / "method").glob("*.yaml"))}
    assert not any(repeats.values()), repeats
    # The check reads every key of a file, the method's own and the other groups':
    planted = tmp_path / "planted.yaml"
    planted.write_text("method:\n  damping: 0.01\n  arnoldi_topk: 7\nunlearn:\n  epochs: 1\n  batch_size: 256\n")
    assert _method_yaml_repeats(planted, registry()["hif_arnoldi"].config()) == ["method.damping", "unlearn.epochs"]


# What an option needs beside itself to compose: a path, or the data and test set that belong together.
EXTRA = {"model/local": ["model.name_or_path=/ckpt", "groundtruth.mode=none"], "data/pile8": ["testset=toxigen"],
         "data/files": ["data.path=/d", "data.group_column=g", "testset=toxigen"],
         "testset/files": ["testset.path=/t", "testset.group_column=g"], "testset/toxigen": ["data=pile8"],
         "testset/winobias": ["data=pile8"], "testset/truthfulqa": ["data=pile8"]}
GROUP_OPTIONS = sorted(f"{g}/{p.stem}" for g in ("model", "data", "testset", "optim") for p in (CONF / g).glob("*.yaml"))


@pytest.mark.parametrize("option", GROUP_OPTIONS)
def test_every_group_option_composes_what_its_file_sets_and_validates(option, compose):
    """Each option of model/, data/, testset/, optim/ composes, passes every check (``typed``), is named
    after its file, and holds each value its YAML sets; the rest is the schema's (next tests)."""
    group, name = option.split("/")
    raw = compose(option.replace("/", "="), *EXTRA.get(option, []))
    assert getattr(typed(raw), group).name == name
    composed = _leaves(OmegaConf.to_container(raw, resolve=False))
    text = (CONF / group / f"{name}.yaml").read_text()
    values = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != "defaults"}
    written = _leaves(values if "# @package _global_" in text else {group: values})
    given = [o.split("=")[0] for o in EXTRA.get(option, [])]
    written = {k: v for k, v in written.items() if v != {} and k not in given}  # {}: a file of schema defaults
    assert {k: composed.get(k) for k in written} == written


def _schema_defaults(group: str, name: str) -> dict:
    from untrac.optim_config import OPTIMIZERS

    if group == "optim":
        return OmegaConf.to_container(OmegaConf.structured(OPTIMIZERS[name]))
    return OmegaConf.to_container(OmegaConf.structured(Config(optim=OPTIMIZERS["adam"]())))


def _leaves(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("group", ["model", "data", "testset", "optim"])
def test_group_yamls_hold_only_what_differs_from_the_schema(group):
    for path in sorted((CONF / group).glob("*.yaml")):
        text = path.read_text()
        values = {k: v for k, v in (yaml.safe_load(text) or {}).items() if k != "defaults"}
        if group in ("model", "testset"):
            values = {group: values}
        schema = _leaves(_schema_defaults(group, path.stem))
        repeated = [k for k, v in _leaves(values).items() if k in schema and schema[k] == v]
        assert not repeated, f"{path.name} repeats the schema's {repeated}"


@pytest.mark.parametrize("override,line", [
    ("data.train={a: a.jsonl, a: b.jsonl, c: c.jsonl}", "data.train gives the key 'a' twice"),
    ("+testset.subsets={q: q.jsonl, r: r.csv, q: s.csv}", "testset.subsets gives the key 'q' twice"),
    ("data.custom_sizes={arxiv: 3, arxiv: 4}", "data.custom_sizes gives the key 'arxiv' twice"),
    ("data.train={a: x.jsonl},{b: y.jsonl, b: z.jsonl}", "data.train gives the key 'b' twice"),  # a sweep
])
def test_a_key_given_twice_in_a_command_line_map_is_refused(override, line, load):
    from untrac.run import duplicate_keys

    with pytest.raises(UntracError, match=f"^{line}: each needs its own name"):
        duplicate_keys(["method=graddot", override])
    if override.startswith("data.train={a: a"):  # what Hydra composes from it: b.jsonl, a.jsonl silently gone
        assert load("data=files", "testset=toxigen", override).data.train == {"a": "b.jsonl", "c": "c.jsonl"}


def test_maps_without_a_repeated_key_pass_the_duplicate_check():
    from untrac.run import duplicate_keys

    duplicate_keys(["data.train={a: a.jsonl, b: b.jsonl}", "testset.subsets={a: a.jsonl}", "seed=3",
                    "data.train={a: [1,", "-m", "model.name=a"])  # a parse error is left for Hydra to report


def test_an_unusable_cache_dir_or_a_missing_file_is_one_line_before_any_training(tmp_path, load):
    from untrac.checks import before_training

    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    good = ("data=files", f"data.train={{a: {tmp_path}/a.jsonl, b: {tmp_path}/a.jsonl}}", "testset=files",
            f"testset.subsets={{t: {tmp_path}/a.jsonl}}", f"cache_dir={tmp_path}/new/cache")
    before_training(load(*good))
    assert (tmp_path / "new" / "cache").is_dir()  # made now, and a file written in it
    cases = [(f"cache_dir={tmp_path}/a.jsonl", f"cache_dir={tmp_path}/a.jsonl is a file, not a folder"),
             ("cache_dir=/proc/untrac/cache", "cache_dir=/proc/untrac/cache is not a writable folder: "),
             (f"data.train={{a: {tmp_path}/a.jsonl, b: {tmp_path}/nowhere.jsonl}}",
              f"data.train.b: {tmp_path}/nowhere.jsonl not found"),
             (f"testset.subsets={{t: {tmp_path}/t.csv}}", f"testset.subsets.t: {tmp_path}/t.csv not found")]
    for override, line in cases:
        with pytest.raises(UntracError) as err:
            before_training(load(*good, override))
        assert str(err.value).startswith(line) and "\n" not in str(err.value), override


def test_a_test_subset_named_like_a_training_dataset_read_from_a_column_is_refused(tmp_path, load):
    """Names that come from a group_column are known only once the file is read: Experiment checks."""
    import json

    from untrac.pipeline import Experiment

    rows = [{"source": z, "prompt": f"{z}{i} ", "target": "x"} for z in ("questions", "news") for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text(json.dumps({"prompt": "q ", "target": "a"}) + "\n")
    cfg = load("data=files", f"data.path={tmp_path}/train.jsonl", "data.group_column=source", "testset=files",
               f"testset.subsets={{questions: {tmp_path}/test.jsonl}}", f"cache_dir={tmp_path}/cache",
               "model.d_model=8", "model.num_heads=2", "model.d_ff=8", "model.num_layers=1", "device=cpu")
    with pytest.raises(UntracError, match=r"^testset\.subsets\.questions has the name of training dataset "
                       r"data\.path \(source=questions\): rename one"):
        Experiment(cfg)
