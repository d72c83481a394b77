"""Model configs: the two examples load; malformed files fail naming file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.core.config import ConfigError, discover, load_config, reference_markdown

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "include" / "models"


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _credit() -> dict[str, object]:
    return dict(yaml.safe_load((MODELS / "credit_risk.yaml").read_text()))


def test_examples_load_with_different_schemas() -> None:
    good, bad = discover(MODELS)
    assert bad == []
    by_name = {c.config.name: c.config for c in good}
    assert set(by_name) == {"credit_risk", "tumor_diagnosis"}
    credit, tumor = by_name["credit_risk"], by_name["tumor_diagnosis"]
    assert credit.entity.dtype == "int64" and tumor.entity.dtype == "string"
    assert isinstance(credit.label.positive_class, int) and isinstance(tumor.label.positive_class, str)
    assert not set(credit.feature_columns) & set(tumor.feature_columns)


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [
        (
            lambda d: d["gates"]["quality"]["min_metrics"].update(roc_auc="high"),
            "gates.quality.min_metrics.roc_auc",
            "valid number",
        ),
        (lambda d: d.update(colour="blue"), "colour", "Extra inputs are not permitted"),
        (lambda d: d.pop("label"), "label", "Field required"),
        (
            lambda d: d["training"]["estimator"].update({"class": "xgboost.XGBClassifier"}),
            "training.estimator.class",
            "write `family: xgboost` instead",
        ),
        (
            lambda d: d["training"]["estimator"].update(family="not a family"),
            "training.estimator.family",
            "unknown estimator family 'not a family'",
        ),
        (lambda d: d["data_quality"]["columns"].update(shoe_size={"min": 1}), "<root>", "shoe_size"),
        (lambda d: d["features"].update(categorical=["age"]), "features", "both numeric and categorical"),
    ],
)
def test_malformed_config_names_file_key_and_problem(tmp_path: Path, mutate, key: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    data = _credit()
    mutate(data)
    path = _write(tmp_path, "credit_risk", data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert problem in message
    if key != "<root>":
        assert f"key '{key}'" in message


def test_name_must_match_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "other_name", _credit())
    with pytest.raises(ConfigError, match="must match the file name 'other_name'"):
        load_config(path)


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- just\n- a list\n")
    (tmp_path / "b.yaml").write_text("name: [unclosed\n")
    good, bad = discover(tmp_path)
    assert good == []
    assert len(bad) == 2
    assert "expected a mapping" in str(bad[0])
    assert "cannot read YAML" in str(bad[1])


def test_config_hash_changes_with_content(tmp_path: Path) -> None:
    data = _credit()
    first = load_config(_write(tmp_path, "credit_risk", data)).config_hash
    data["description"] = "changed"
    assert load_config(_write(tmp_path, "credit_risk", data)).config_hash != first


def test_reference_documents_every_key() -> None:
    table = reference_markdown()
    for key in [
        "name",
        "source.landing",
        "entity.join_key",
        "label.positive_class",
        "features.numeric",
        "sensitive_attributes",
        "data_quality.columns.<column>.allowed",
        "gates.drift.max_drifted_share",
        "gates.fairness.max_disparity",
        "gates.champion.tolerance",
        "training.estimator.family",
        "training.estimator.params",
        "training.resources.gpu",
        "promotion.require_approval",
    ]:
        assert f"| `{key}` |" in table, key


def test_readme_carries_the_current_reference() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- config-reference:start -->\n", 1)[1].split("\n<!-- config-reference:end -->")[0]
    assert block.strip() == reference_markdown().strip()
