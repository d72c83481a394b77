"""The estimators a model config may name: an allow-list the platform owns, never an import path.

A model YAML names a *family* (``training.estimator.family: xgboost``); this module maps it to a class
and checks its ``params`` against a static table of the class's constructor arguments. The table is
plain data so that loading a config (at DAG parse time) imports neither scikit-learn nor XGBoost;
``tests/unit/test_config_estimators.py`` asserts it matches ``inspect.signature`` of the real classes.

Only the platform's environment can add a family (``MLOPS_EXTRA_ESTIMATORS``, read by
:func:`mlops.core.settings.extra_estimators`); its params are checked against the class's signature when
the estimator is built, since its table is not known here.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

JsonType = Literal["int", "float", "bool", "str", "null", "list"]


class EstimatorParamError(ValueError):
    """A family or parameter the allow-list does not accept. ``key`` is the offending key, if any."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Accepts:
    """One accepted shape of a parameter value (a parameter accepts any of its shapes)."""

    type: JsonType
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()
    pattern: str = ""

    def matches(self, value: Any) -> bool:
        if self.type == "null":
            return value is None
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "str":
            return self._matches_str(value)
        if self.type == "list":
            return isinstance(value, list) and len(value) <= 10_000 and all(_is_plain_number(v) for v in value)
        return self._matches_number(value)

    def _matches_str(self, value: Any) -> bool:
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            return False
        return not self.pattern or re.fullmatch(self.pattern, value) is not None

    def _matches_number(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if (self.type == "int" and not isinstance(value, int)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            return False
        if self.minimum is not None and (value < self.minimum or (self.exclusive_minimum and value == self.minimum)):
            return False
        return self.maximum is None or value <= self.maximum

    def describe(self) -> str:
        if self.type in ("null", "bool"):
            return "null" if self.type == "null" else "true/false"
        if self.type == "str":
            if self.choices:
                return " | ".join(repr(c) for c in self.choices)
            return f"a string matching {self.pattern}" if self.pattern else "a string"
        if self.type == "list":
            return "a list of numbers"
        low = "" if self.minimum is None else f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        bounds = " and ".join(b for b in (low, high) if b)
        name = "an integer" if self.type == "int" else "a number"
        return f"{name} {bounds}".strip()

    def json_schema(self) -> dict[str, Any]:
        if self.type in ("null", "bool"):
            return {"type": "null" if self.type == "null" else "boolean"}
        if self.type == "str":
            schema: dict[str, Any] = {"type": "string"}
            if self.choices:
                schema["enum"] = list(self.choices)
            if self.pattern:
                schema["pattern"] = f"^(?:{self.pattern})$"
            return schema
        if self.type == "list":
            return {"type": "array", "items": {"type": "number"}, "maxItems": 10_000}
        schema = {"type": "integer" if self.type == "int" else "number"}
        if self.minimum is not None:
            schema["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


def _is_plain_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ParamSpec:
    """What a config may pass for one constructor argument; ``refused`` says why it may not be set."""

    accepts: tuple[Accepts, ...] = ()
    refused: str = ""

    def check(self, value: Any) -> str | None:
        """None when ``value`` is acceptable, else the reason it is not."""
        if self.refused:
            return f"cannot be set from a config: {self.refused}"
        if any(a.matches(value) for a in self.accepts):
            return None
        return f"got {value!r}; expected " + " or ".join(a.describe() for a in self.accepts)


def _int(minimum: float | None = None, maximum: float | None = None) -> Accepts:
    return Accepts("int", minimum, maximum)


def _num(minimum: float | None = None, maximum: float | None = None, *, above: bool = False) -> Accepts:
    return Accepts("float", minimum, maximum, exclusive_minimum=above)


def _str(*choices: str) -> Accepts:
    return Accepts("str", choices=choices)


def _p(*accepts: Accepts) -> ParamSpec:
    return ParamSpec(accepts=accepts)


NULL = Accepts("null")
BOOL = Accepts("bool")
SEED = _p(NULL, _int(0, 2**32 - 1))
N_JOBS = _p(NULL, _int(-1, 1024))
VERBOSE = _p(_int(0, 3), BOOL)
UNIT = _num(0, 1, above=True)  # a fraction in (0, 1]

_TREE_ENSEMBLE: dict[str, ParamSpec] = {
    "n_estimators": _p(_int(1, 10_000)),
    "criterion": _p(_str("gini", "entropy", "log_loss")),
    "max_depth": _p(NULL, _int(1, 1000)),
    "min_samples_split": _p(_int(2, 1_000_000), Accepts("float", 0, 1, exclusive_minimum=True)),
    "min_samples_leaf": _p(_int(1, 1_000_000), Accepts("float", 0, 1, exclusive_minimum=True)),
    "min_weight_fraction_leaf": _p(_num(0, 0.5)),
    "max_features": _p(NULL, _str("sqrt", "log2"), _int(1, 100_000), Accepts("float", 0, 1, exclusive_minimum=True)),
    "max_leaf_nodes": _p(NULL, _int(2, 10_000_000)),
    "min_impurity_decrease": _p(_num(0, 1e6)),
    "bootstrap": _p(BOOL),
    "oob_score": _p(BOOL),
    "n_jobs": N_JOBS,
    "random_state": SEED,
    "verbose": VERBOSE,
    "warm_start": _p(BOOL),
    "class_weight": _p(NULL, _str("balanced", "balanced_subsample")),
    "ccp_alpha": _p(_num(0, 1e6)),
    "max_samples": _p(NULL, _int(1, 10**9), Accepts("float", 0, 1, exclusive_minimum=True)),
    "monotonic_cst": ParamSpec(refused="per-column constraints depend on the pipeline's encoded column order"),
}


@dataclass(frozen=True)
class Family:
    """One allow-listed estimator: its class (imported only when training) and its parameter table."""

    class_path: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    uses_gpu: bool = False
    requirements: tuple[str, ...] = ()
    signature_of: tuple[str, ...] = ()  # classes whose constructors together make up the signature
    checked: bool = True  # False for a platform-added family: params are checked when it is built
    kind: Literal["classifier", "regressor"] = "classifier"  # binary/multiclass need one, regression the other


FAMILIES: dict[str, Family] = {
    "xgboost": Family(
        class_path="xgboost.XGBClassifier",
        uses_gpu=True,
        requirements=("xgboost",),
        signature_of=("xgboost.XGBClassifier", "xgboost.sklearn.XGBModel"),
        params={
            "max_depth": _p(NULL, _int(0, 64)),
            "max_leaves": _p(NULL, _int(0, 10_000_000)),
            "max_bin": _p(NULL, _int(2, 65_536)),
            "grow_policy": _p(NULL, _str("depthwise", "lossguide")),
            "learning_rate": _p(NULL, _num(0, 1, above=True)),
            "n_estimators": _p(NULL, _int(1, 100_000)),
            "verbosity": _p(NULL, _int(0, 3)),
            "objective": _p(NULL, _str("binary:logistic", "binary:logitraw", "binary:hinge")),
            "booster": _p(NULL, _str("gbtree", "gblinear", "dart")),
            "tree_method": _p(NULL, _str("auto", "exact", "approx", "hist")),
            "n_jobs": N_JOBS,
            "gamma": _p(NULL, _num(0, 1e6)),
            "min_child_weight": _p(NULL, _num(0, 1e6)),
            "max_delta_step": _p(NULL, _num(0, 1e6)),
            "subsample": _p(NULL, UNIT),
            "sampling_method": _p(NULL, _str("uniform", "gradient_based")),
            "colsample_bytree": _p(NULL, UNIT),
            "colsample_bylevel": _p(NULL, UNIT),
            "colsample_bynode": _p(NULL, UNIT),
            "reg_alpha": _p(NULL, _num(0, 1e6)),
            "reg_lambda": _p(NULL, _num(0, 1e6)),
            "scale_pos_weight": _p(NULL, _num(0, 1e6, above=True)),
            "base_score": _p(NULL, _num(0, 1, above=True)),
            "random_state": SEED,
            "missing": _p(_num(-1e300, 1e300)),
            "num_parallel_tree": _p(NULL, _int(1, 1000)),
            "monotone_constraints": ParamSpec(refused="per-column constraints depend on the encoded column order"),
            "interaction_constraints": ParamSpec(refused="per-column constraints depend on the encoded column order"),
            "importance_type": _p(NULL, _str("gain", "weight", "cover", "total_gain", "total_cover")),
            "device": _p(NULL, Accepts("str", pattern=r"cpu|cuda(?::[0-9])?")),
            "validate_parameters": _p(NULL, BOOL),
            "enable_categorical": _p(BOOL),
            "feature_types": ParamSpec(refused="the pipeline encodes categorical columns itself"),
            "feature_weights": ParamSpec(refused="per-column weights depend on the encoded column order"),
            "max_cat_to_onehot": _p(NULL, _int(1, 10_000)),
            "max_cat_threshold": _p(NULL, _int(1, 10_000)),
            "multi_strategy": _p(NULL, _str("one_output_per_tree", "multi_output_tree")),
            "eval_metric": _p(NULL, _str("logloss", "auc", "aucpr", "error")),
            "early_stopping_rounds": ParamSpec(refused="training passes no evaluation set to stop early on"),
            "callbacks": ParamSpec(refused="takes Python objects"),
        },
    ),
    "logistic_regression": Family(
        class_path="sklearn.linear_model.LogisticRegression",
        signature_of=("sklearn.linear_model.LogisticRegression",),
        params={
            "penalty": ParamSpec(refused="deprecated in scikit-learn; use C and l1_ratio"),
            "C": _p(_num(0, 1e12, above=True)),
            "l1_ratio": _p(NULL, _num(0, 1)),
            "dual": _p(BOOL),
            "tol": _p(_num(0, 1, above=True)),
            "fit_intercept": _p(BOOL),
            "intercept_scaling": _p(_num(0, 1e6, above=True)),
            "class_weight": _p(NULL, _str("balanced")),
            "random_state": SEED,
            "solver": _p(_str("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga")),
            "max_iter": _p(_int(1, 1_000_000)),
            "verbose": _p(_int(0, 3)),
            "warm_start": _p(BOOL),
            "n_jobs": N_JOBS,
        },
    ),
    "random_forest": Family(
        class_path="sklearn.ensemble.RandomForestClassifier",
        signature_of=("sklearn.ensemble.RandomForestClassifier",),
        params=dict(_TREE_ENSEMBLE),
    ),
    "extra_trees": Family(
        class_path="sklearn.ensemble.ExtraTreesClassifier",
        signature_of=("sklearn.ensemble.ExtraTreesClassifier",),
        params=dict(_TREE_ENSEMBLE),
    ),
    "hist_gradient_boosting": Family(
        class_path="sklearn.ensemble.HistGradientBoostingClassifier",
        signature_of=("sklearn.ensemble.HistGradientBoostingClassifier",),
        params={
            "loss": _p(_str("log_loss")),
            "learning_rate": _p(_num(0, 10, above=True)),
            "max_iter": _p(_int(1, 100_000)),
            "max_leaf_nodes": _p(NULL, _int(2, 1_000_000)),
            "max_depth": _p(NULL, _int(1, 1000)),
            "min_samples_leaf": _p(_int(1, 1_000_000)),
            "l2_regularization": _p(_num(0, 1e6)),
            "max_features": _p(UNIT),
            "max_bins": _p(_int(2, 255)),
            "categorical_features": _p(NULL, _str("from_dtype")),
            "monotonic_cst": ParamSpec(refused="per-column constraints depend on the encoded column order"),
            "interaction_cst": ParamSpec(refused="per-column constraints depend on the encoded column order"),
            "warm_start": _p(BOOL),
            "early_stopping": _p(BOOL, _str("auto")),
            "scoring": _p(NULL, _str("loss", "roc_auc", "accuracy", "f1", "average_precision", "neg_log_loss")),
            "validation_fraction": _p(NULL, Accepts("float", 0, 1, exclusive_minimum=True), _int(1, 10**9)),
            "n_iter_no_change": _p(_int(1, 10_000)),
            "tol": _p(_num(0, 1)),
            "verbose": _p(_int(0, 3)),
            "random_state": SEED,
            "class_weight": _p(NULL, _str("balanced")),
        },
    ),
}

_REGRESSION_TREES = {
    **{k: v for k, v in _TREE_ENSEMBLE.items() if k != "class_weight"},
    "criterion": _p(_str("squared_error", "absolute_error", "friedman_mse", "poisson")),
    "max_features": _p(NULL, _str("sqrt", "log2"), _int(1, 100_000), Accepts("float", 0, 1, exclusive_minimum=True)),
}
_HGB_REGRESSOR = {
    **{k: v for k, v in FAMILIES["hist_gradient_boosting"].params.items() if k != "class_weight"},
    "loss": _p(_str("squared_error", "absolute_error", "gamma", "poisson", "quantile")),
    "quantile": _p(NULL, _num(0, 1)),
    "scoring": _p(NULL, _str("loss", "r2", "neg_mean_squared_error", "neg_mean_absolute_error")),
}
FAMILIES.update(
    {
        "ridge": Family(
            class_path="sklearn.linear_model.Ridge",
            signature_of=("sklearn.linear_model.Ridge",),
            kind="regressor",
            params={
                "alpha": _p(_num(0, 1e12)),
                "fit_intercept": _p(BOOL),
                "copy_X": _p(BOOL),
                "max_iter": _p(NULL, _int(1, 1_000_000)),
                "tol": _p(_num(0, 1, above=True)),
                "solver": _p(_str("auto", "svd", "cholesky", "lsqr", "sparse_cg", "sag", "saga", "lbfgs")),
                "positive": _p(BOOL),
                "random_state": SEED,
            },
        ),
        "random_forest_regressor": Family(
            class_path="sklearn.ensemble.RandomForestRegressor",
            signature_of=("sklearn.ensemble.RandomForestRegressor",),
            kind="regressor",
            params=_REGRESSION_TREES,
        ),
        "hist_gradient_boosting_regressor": Family(
            class_path="sklearn.ensemble.HistGradientBoostingRegressor",
            signature_of=("sklearn.ensemble.HistGradientBoostingRegressor",),
            kind="regressor",
            params=_HGB_REGRESSOR,
        ),
    }
)

FAMILY_PATTERN = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"
CLASS_PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$"


def families() -> dict[str, Family]:
    """The allow-list: the built-in families plus any the platform's environment adds."""
    from mlops.core.settings import SettingsError, extra_estimators

    try:
        extra = {name: Family(class_path=path, checked=False) for name, path in extra_estimators().items()}
    except SettingsError as exc:
        raise EstimatorParamError(str(exc), key="family") from None
    return {**FAMILIES, **extra}


def get_family(name: str) -> Family:
    """The allow-listed family ``name``; raise EstimatorParamError naming the choices otherwise."""
    if name in FAMILIES:
        return FAMILIES[name]
    known = families()
    if name not in known:
        raise EstimatorParamError(
            f"unknown estimator family {name!r}; allowed: {', '.join(sorted(known))} "
            "(the platform's MLOPS_EXTRA_ESTIMATORS setting adds more, never a model config)",
            key="family",
        )
    return known[name]


def check_params(family: str, params: Any) -> dict[str, Any]:
    """Validate ``params`` for ``family``: the one check the config loader and the training form share.

    Raises EstimatorParamError whose ``key`` is ``params.<name>`` for the first bad parameter.
    """
    spec = get_family(family)
    if not isinstance(params, dict):
        raise EstimatorParamError(f"params must be a mapping of name to value, got {type(params).__name__}", "params")
    for name, value in params.items():
        if not isinstance(name, str):
            raise EstimatorParamError(f"parameter names must be strings, got {name!r}", "params")
        if not spec.checked:
            if not (value is None or isinstance(value, str | bool) or _is_plain_number(value)):
                expected = "expected a plain number, string, boolean or null"
                raise EstimatorParamError(f"got {value!r}; {expected}", f"params.{name}")
            continue
        param = spec.params.get(name)
        if param is None:
            raise EstimatorParamError(
                f"unknown parameter {name!r} for estimator family {family!r} ({spec.class_path}); "
                f"it takes: {', '.join(sorted(n for n, p in spec.params.items() if not p.refused))}",
                f"params.{name}",
            )
        problem = param.check(value)
        if problem:
            raise EstimatorParamError(f"{family} parameter {name!r} {problem}", f"params.{name}")
    return dict(params)


def params_json_schema(family: str) -> dict[str, Any]:
    """JSON schema of ``params`` for ``family`` (the training form's Param carries it)."""
    spec = get_family(family)
    if not spec.checked:
        scalar = {"type": ["null", "string", "boolean", "number"]}
        return {"type": "object", "additionalProperties": scalar}
    properties = {
        name: {"anyOf": [a.json_schema() for a in param.accepts]}
        for name, param in spec.params.items()
        if not param.refused
    }
    return {"type": "object", "properties": properties, "additionalProperties": False}


def signature_params(family: Family) -> set[str]:
    """Named constructor arguments of the family's real class(es); imports them (tests, training)."""
    names: set[str] = set()
    for path in family.signature_of or (family.class_path,):
        for name, param in inspect.signature(_import(path)).parameters.items():
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                names.add(name)
    return names


def _import(path: str) -> Any:
    module_name, _, class_name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def estimator_class(family: str) -> Any:
    """The class of an allow-listed family (the only place an estimator class is imported)."""
    spec = get_family(family)
    try:
        return _import(spec.class_path)
    except (ImportError, AttributeError) as exc:
        raise EstimatorParamError(f"estimator family {family!r} ({spec.class_path}) cannot be imported: {exc}") from exc
