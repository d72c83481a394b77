"""Adversarial model configs: each one must be refused at load with a ConfigError naming file and key.

A model YAML is data. It must never name code to run, reach a file outside the landing root, carry a
cron Airflow would reject or never fire, or hold thresholds that make a gate meaningless.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops.core.config import ConfigError, LoadedConfig, ModelConfig, discover, load_config

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "include" / "models"

Data = dict[str, Any]


def _credit() -> Data:
    return dict(yaml.safe_load((MODELS / "credit_risk.yaml").read_text()))


def _tumor() -> Data:
    return dict(yaml.safe_load((MODELS / "tumor_diagnosis.yaml").read_text()))


def _set(*path: str, value: Any) -> Callable[[Data], None]:
    def mutate(data: Data) -> None:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    return mutate


def _estimator(value: Any) -> Callable[[Data], None]:
    return _set("training", "estimator", value=value)


def _rule(column: str, rule: Data) -> Callable[[Data], None]:
    return lambda d: d["data_quality"]["columns"].__setitem__(column, rule)


# (id, mutation of credit_risk.yaml, the key the message must name, a fragment of the reason)
CASES: list[tuple[str, Callable[[Data], None], str, str]] = [
    # --- code named as an estimator
    (
        "class-os-system",
        _estimator({"class": "os.system", "params": {"command": "id"}}),
        "training.estimator.class",
        "family",
    ),
    (
        "class-popen",
        _estimator({"class": "subprocess.Popen", "params": {"args": "id"}}),
        "training.estimator.class",
        "family",
    ),
    ("class-eval", _estimator({"class": "builtins.eval", "params": {}}), "training.estimator.class", "family"),
    ("family-os-system", _estimator({"family": "os.system"}), "training.estimator.family", "unknown estimator family"),
    (
        "family-popen",
        _estimator({"family": "subprocess.Popen"}),
        "training.estimator.family",
        "unknown estimator family",
    ),
    ("family-eval", _estimator({"family": "builtins.eval"}), "training.estimator.family", "unknown estimator family"),
    (
        "family-and-module",
        _estimator({"family": "xgboost", "module": "os"}),
        "training.estimator.module",
        "Extra inputs",
    ),
    (
        "param-unknown",
        _estimator({"family": "xgboost", "params": {"command": "id"}}),
        "training.estimator.params.command",
        "unknown parameter",
    ),
    (
        "param-callbacks",
        _estimator({"family": "xgboost", "params": {"callbacks": ["os.system"]}}),
        "training.estimator.params.callbacks",
        "cannot be set",
    ),
    (
        "param-type",
        _estimator({"family": "xgboost", "params": {"n_estimators": "100"}}),
        "training.estimator.params.n_estimators",
        "expected",
    ),
    (
        "param-range",
        _estimator({"family": "xgboost", "params": {"learning_rate": 5}}),
        "training.estimator.params.learning_rate",
        "<= 1",
    ),
    (
        "param-bool-as-int",
        _estimator({"family": "random_forest", "params": {"n_estimators": True}}),
        "training.estimator.params.n_estimators",
        "expected",
    ),
    (
        "param-choice",
        _estimator({"family": "logistic_regression", "params": {"solver": "__import__('os')"}}),
        "training.estimator.params.solver",
        "expected",
    ),
    (
        "params-not-mapping",
        _estimator({"family": "xgboost", "params": ["n_estimators", 10]}),
        "training.estimator.params",
        "dictionary",
    ),
    # --- landing paths and ready flags
    ("landing-absolute", _set("source", "landing", value="/etc"), "source.landing", "absolute"),
    ("landing-dotdot", _set("source", "landing", value="../tumor_diagnosis"), "source.landing", "'..'"),
    ("landing-inner-dotdot", _set("source", "landing", value="credit/../../../etc"), "source.landing", "'..'"),
    ("landing-s3", _set("source", "landing", value="s3://bucket/credit"), "source.landing", "scheme"),
    ("landing-file-url", _set("source", "landing", value="file:///etc"), "source.landing", "scheme"),
    ("landing-drive", _set("source", "landing", value="C:/Windows"), "source.landing", "scheme"),
    ("landing-hidden", _set("source", "landing", value="home/.ssh"), "source.landing", "hidden"),
    ("landing-backslash", _set("source", "landing", value="credit\\..\\etc"), "source.landing", "backslash"),
    ("landing-empty-segment", _set("source", "landing", value="credit//risk"), "source.landing", "empty"),
    ("flag-dotdot", _set("source", "ready_flag", value="../x"), "source.ready_flag", "plain file name"),
    ("flag-absolute", _set("source", "ready_flag", value="/etc/passwd"), "source.ready_flag", "plain file name"),
    ("flag-batch-name", _set("source", "ready_flag", value="2026-03-01.csv"), "source.ready_flag", "batch file"),
    ("flag-hidden", _set("source", "ready_flag", value=".bashrc"), "source.ready_flag", "plain file name"),
    # --- cron
    ("cron-out-of-range", _set("training", "schedule", value="61 * * * *"), "training.schedule", "not a cron"),
    ("cron-four-fields", _set("training", "schedule", value="* * * *"), "training.schedule", "five fields"),
    ("cron-seconds-field", _set("training", "schedule", value="0 3 * * 0 0"), "training.schedule", "five fields"),
    ("cron-never-fires", _set("training", "schedule", value="0 0 31 2 *"), "training.schedule", "not a cron"),
    ("cron-unknown-preset", _set("training", "schedule", value="@fortnightly"), "training.schedule", "preset"),
    ("cron-not-a-string", _set("training", "schedule", value=7), "training.schedule", "valid string"),
    # --- ranges and cross-field rules
    ("column-min-gt-max", _rule("age", {"min": 100, "max": 18}), "data_quality.columns.age.min", "greater than max"),
    (
        "rows-min-gt-max",
        lambda d: d["data_quality"].update(min_rows=10, max_rows=5),
        "data_quality.min_rows",
        "greater than max_rows",
    ),
    (
        "file-gt-day",
        lambda d: d["data_quality"].update(max_file_mb=900, max_day_mb=100),
        "data_quality.max_file_mb",
        "greater than max_day_mb",
    ),
    (
        "holdout-ge-window",
        lambda d: d["training"].update(holdout_days=30, window_days=30),
        "training.holdout_days",
        "less than window_days",
    ),
    (
        "window-too-short",
        _set("training", "window_days", value=2),
        "training.window_days",
        "greater than or equal to 3",
    ),
    ("sensitive-is-key", _set("sensitive_attributes", value=["customer_id"]), "sensitive_attributes", "entity key"),
    ("sensitive-is-label", _set("sensitive_attributes", value=["defaulted"]), "sensitive_attributes", "entity key"),
    (
        "sensitive-twice",
        _set("sensitive_attributes", value=["gender", "gender"]),
        "sensitive_attributes",
        "more than once",
    ),
    ("classes-without-positive", _set("label", "classes", value=[0, 2]), "label.classes", "must hold positive_class"),
    ("classes-single", _set("label", "classes", value=[1]), "label.classes", "at least two"),
    ("classes-duplicate", _set("label", "classes", value=[0, 1, 1]), "label.classes", "more than once"),
    ("classes-mixed-type", _set("label", "classes", value=["0", 1]), "label.classes", "type"),
    (
        "positive-bool-int-classes",
        _set("label", "positive_class", value=True),
        "label.classes",
        "not of positive_class's type (bool)",
    ),
    (
        "positive-float",
        _set("label", "positive_class", value=1.5),
        "label.positive_class",
        "a boolean, an integer or a string",
    ),
    ("classes-bool", _set("label", "classes", value=[0, True]), "label.classes", "not of positive_class's type (int)"),
    (
        "minmax-on-categorical",
        _rule("home_ownership", {"min": 0}),
        "data_quality.columns.home_ownership.min",
        "not a numeric column",
    ),
    (
        "allowed-on-numeric",
        _rule("age", {"allowed": ["18"]}),
        "data_quality.columns.age.allowed",
        "not a categorical column",
    ),
    (
        "allowed-on-label",
        _rule("defaulted", {"allowed": ["0", "1"]}),
        "data_quality.columns.defaulted.allowed",
        "label.classes",
    ),
    ("allowed-empty", _rule("gender", {"allowed": []}), "data_quality.columns.gender.allowed", "at least 1"),
    (
        "drift-share-above-1",
        _set("gates", "drift", "max_drifted_share", value=1.5),
        "gates.drift.max_drifted_share",
        "less than or equal to 1",
    ),
    (
        "min-metric-above-1",
        _set("gates", "quality", "min_metrics", value={"roc_auc": 1.01}),
        "gates.quality.min_metrics.roc_auc",
        "between 0 and 1",
    ),
    ("min-metrics-empty", _set("gates", "quality", "min_metrics", value={}), "gates.quality.min_metrics", "at least 1"),
    (
        "disparity-nan",
        _set("gates", "fairness", "max_disparity", value=math.nan),
        "gates.fairness.max_disparity",
        "finite",
    ),
    (
        "guardrail-negative",
        _set("monitoring", "min_quality", value={"roc_auc": -0.1}),
        "monitoring.min_quality.roc_auc",
        "between 0 and 1",
    ),
    (
        "tolerance-above-1",
        _set("gates", "champion", "tolerance", value=3),
        "gates.champion.tolerance",
        "less than or equal to 1",
    ),
    (
        "cooldown-huge",
        _set("retraining", "cooldown_minutes", value=10**9),
        "retraining.cooldown_minutes",
        "less than or equal",
    ),
    (
        "column-name-injection",
        _set("features", "numeric", value=["age", "x; DROP TABLE t"]),
        "features.numeric",
        "identifier",
    ),
    # --- resources
    ("cpu-not-quantity", _set("training", "resources", "cpu", value="lots"), "training.resources.cpu", "CPU quantity"),
    ("cpu-zero", _set("training", "resources", "cpu", value="0"), "training.resources.cpu", "between"),
    (
        "memory-not-quantity",
        _set("training", "resources", "memory", value="8GB"),
        "training.resources.memory",
        "memory quantity",
    ),
    ("memory-tiny", _set("training", "resources", "memory", value="1Ki"), "training.resources.memory", "between"),
    (
        "image-injection",
        _set("training", "resources", "image", value="ghcr.io/x:1; rm -rf /"),
        "training.resources.image",
        "image reference",
    ),
    ("gpu-for-cpu-family", _estimator({"family": "logistic_regression"}), "training.resources.gpu", "cannot use a GPU"),
    ("owner-injection", _set("owner", value="<script>"), "owner", "plain owner name"),
]


@pytest.mark.parametrize(("mutate", "key", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_is_refused_naming_file_and_key(
    tmp_path: Path, mutate: Callable[[Data], None], key: str, reason: str
) -> None:
    data = _credit()
    mutate(data)
    path = tmp_path / "credit_risk.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert f"key '{key}'" in message, message
    assert reason in message, message


def test_the_unmutated_example_loads(tmp_path: Path) -> None:
    """The base every case above mutates is valid: each refusal is due to its one mutation."""
    path = tmp_path / "credit_risk.yaml"
    path.write_text(yaml.safe_dump(_credit()))
    assert load_config(path).config.training.estimator.family == "xgboost"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("credit__risk", "no '__'"),  # DAG ids <model>__<kind>; MLflow <model>__shadow
        ("credit_risk__shadow", "no '__'"),
        ("model_config_errors", "reserves"),  # model_config_errors__<kind> is the config-error DAG
        ("model_config_errors_x", "reserves"),
        ("credit_", "single underscores"),
        ("Credit", "lower-case"),
        ("x", "2-40"),
    ],
)
def test_reserved_or_malformed_model_names(tmp_path: Path, name: str, reason: str) -> None:
    data = _credit()
    data["name"] = name
    data["source"]["landing"] = "credit_risk"
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "key 'name'" in str(err.value)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name: !!python/object/apply:os.system ['id']\n", "cannot read YAML"),
        ("name: !!python/name:builtins.eval ''\n", "cannot read YAML"),
        ("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "anchors and aliases"),
        ("name: credit_risk\nname: other\n", "appears twice"),
        ("\xff\xfe".encode("latin-1").decode("latin-1") + "name: x\n", "cannot read YAML"),
    ],
)
def test_yaml_that_is_more_than_data_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "credit_risk.yaml"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and reason in str(err.value)


def test_oversized_file_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "credit_risk.yaml"
    path.write_text("description: " + "x" * 300_000 + "\n")
    with pytest.raises(ConfigError, match="at most"):
        load_config(path)


def _pair(tmp_path: Path, second: Data) -> tuple[list[LoadedConfig], list[ConfigError], Path, Path]:
    first = tmp_path / "credit_risk.yaml"
    first.write_text(yaml.safe_dump(_credit()))
    other = tmp_path / f"{second['name']}.yaml"
    other.write_text(yaml.safe_dump(second))
    good, bad = discover(tmp_path)
    return good, bad, first, other


def _copy_of_credit(name: str) -> Data:
    data = copy.deepcopy(_credit())
    data["name"] = name
    data["source"]["landing"] = name
    return data


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["entity"].update(join_key="customer_id", dtype="string"), "entity.name"),
        (lambda d: d["source"].update(landing="credit_risk"), "source.landing"),
        (lambda d: d["source"].update(landing="credit_risk/inner"), "source.landing"),  # nested inside
        (lambda d: d["source"].update(landing="Credit_Risk"), "source.landing"),  # same folder where case folds
    ],
)
def test_cross_model_conflicts_refuse_both_files_naming_both(
    tmp_path: Path, change: Callable[[Data], None], key: str
) -> None:
    second = _copy_of_credit("credit_copy")
    change(second)
    good, bad, first, other = _pair(tmp_path, second)
    assert good == []
    assert len(bad) == 2
    for error in bad:
        assert str(first) in str(error) and str(other) in str(error)
        assert f"key '{key}'" in str(error)


def test_models_sharing_an_identical_entity_are_fine(tmp_path: Path) -> None:
    good, bad, _, _ = _pair(tmp_path, _copy_of_credit("credit_copy"))
    assert bad == [] and {c.config.name for c in good} == {"credit_risk", "credit_copy"}


def test_same_feature_view_from_two_folders_is_a_conflict(tmp_path: Path) -> None:
    from mlops.core.config import cross_model_errors

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    (a_dir / "credit_risk.yaml").write_text(yaml.safe_dump(_credit()))
    moved = _credit()
    moved["source"]["landing"] = "elsewhere"
    (b_dir / "credit_risk.yaml").write_text(yaml.safe_dump(moved))
    problems = cross_model_errors([load_config(a_dir / "credit_risk.yaml"), load_config(b_dir / "credit_risk.yaml")])
    assert set(problems) == {a_dir / "credit_risk.yaml", b_dir / "credit_risk.yaml"}
    assert any("feature view 'credit_risk_features'" in p for p in problems[a_dir / "credit_risk.yaml"])


def test_a_conflict_leaves_unrelated_models_loaded(tmp_path: Path) -> None:
    (tmp_path / "tumor_diagnosis.yaml").write_text(yaml.safe_dump(_tumor()))
    second = _copy_of_credit("credit_copy")
    second["source"]["landing"] = "credit_risk"
    good, bad, _, _ = _pair(tmp_path, second)
    assert [c.config.name for c in good] == ["tumor_diagnosis"]
    assert len(bad) == 2


# ------------------------------------------------------------------------------------ property test

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["/etc/passwd", "../x", "s3://b/p", "os.system", "@daily", "0 3 * * 0", "xgboost", "", "1Gi"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


@st.composite
def _mutated(draw: st.DrawFn) -> Data:
    data = draw(st.sampled_from([_credit, _tumor]))()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(_VALUES)
        else:
            parent[path[-1]] = draw(_VALUES)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_any_mutation_loads_or_raises_config_error_and_valid_ones_round_trip(data: Data) -> None:
    with tempfile.TemporaryDirectory() as folder:
        name = data.get("name")
        path = Path(folder) / f"{name if isinstance(name, str) and re.fullmatch('[a-z0-9_]+', name) else 'm'}.yaml"
        path.write_text(yaml.safe_dump(data))
        try:
            loaded = load_config(path)
        except ConfigError as exc:
            assert str(path) in str(exc)
            return
        again = Path(folder) / "again" / path.name
        again.parent.mkdir()
        again.write_text(yaml.safe_dump(loaded.config.model_dump(mode="json")))
        assert load_config(again).config == loaded.config
        assert ModelConfig.model_validate(loaded.config.model_dump()) == loaded.config


# ------------------------------------------------------------------- landing root: the only base


def test_landing_store_and_flag_stay_below_the_landing_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlops.core.config import SourceConfig, get_config
    from mlops.core.settings import get_settings
    from mlops.data.ingest import landing_store
    from mlops.orchestration.dagkit import landing_flag

    cfg = get_config("credit_risk", MODELS).config
    monkeypatch.setenv("MLOPS_LANDING_URI", str(tmp_path / "landing"))
    store = landing_store(cfg, get_settings())
    assert store.local_path("") == tmp_path / "landing" / "credit_risk"
    assert landing_flag(cfg) == tmp_path / "landing" / "credit_risk" / "_READY"
    monkeypatch.setenv("MLOPS_LANDING_URI", "s3://bucket/landing")
    assert landing_store(cfg, get_settings()).uri == "s3://bucket/landing/credit_risk"  # type: ignore[attr-defined]
    assert landing_flag(cfg) is None  # nothing to watch on S3
    # A config built around validation (model_construct) is still refused where the path is used.
    monkeypatch.setenv("MLOPS_LANDING_URI", str(tmp_path / "landing"))
    for landing, flag in (("../../etc", "_READY"), ("/etc", "_READY"), ("credit_risk", "../../x")):
        forged = cfg.model_copy(update={"source": SourceConfig.model_construct(landing=landing, ready_flag=flag)})
        with pytest.raises(ValueError):
            landing_flag(forged)
        if flag == "_READY":
            with pytest.raises(ValueError):
                landing_store(forged, get_settings())
