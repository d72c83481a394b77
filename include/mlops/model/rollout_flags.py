"""Feature flags over the rollout state, through OpenFeature (``openfeature-sdk``).

An online application asks ``model.<name>.variant`` for an entity (its key as the evaluation context's
``targeting_key``) and gets the arm batch scoring would give it: ``"canary"`` or ``"champion"``, with
the serving version in the flag metadata. Both call :func:`mlops.model.rollout.in_canary` on the key in
the entity's declared type, so the answer is the same. ``model.<name>.kill_switch`` (boolean) is true
once the latest rollout was aborted: the canary serves nobody.

The provider reads the state from the lake and the champion alias from the registry at most every
``ttl_s`` seconds (default 1 s), so an abort reaches applications within that.

    from openfeature import api
    api.set_provider(RolloutFlagProvider())
    arm = api.get_client().get_string_value("model.credit_risk.variant", "champion",
                                            EvaluationContext(targeting_key="12345"))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from mlops.model import rollout

CANARY, CHAMPION = "canary", "champion"
PREFIX = "model."


def _champion(model: str) -> str | None:
    from mlops.model.registry import CHAMPION as ALIAS
    from mlops.model.registry import get_alias_version

    return get_alias_version(model, ALIAS)


def _dtype(model: str) -> str:
    from mlops.core.config import get_config

    return get_config(model).config.entity.dtype


class RolloutFlagProvider(AbstractProvider):
    """``model.<name>.variant`` (string) and ``model.<name>.kill_switch`` (boolean) for every model."""

    def __init__(
        self,
        ttl_s: float = 1.0,
        *,
        champion_of: Callable[[str], str | None] = _champion,
        dtype_of: Callable[[str], str] = _dtype,
    ) -> None:
        self.ttl_s = ttl_s
        self._champion_of = champion_of
        self._dtype_of = dtype_of
        self._cache: dict[str, tuple[float, rollout.RolloutState | None, str | None]] = {}
        self._lock = threading.Lock()

    def get_metadata(self) -> Metadata:
        return Metadata(name="mlops-rollout")

    def _state(self, model: str) -> tuple[rollout.RolloutState | None, str | None]:
        with self._lock:
            cached = self._cache.get(model)
            if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
                return cached[1], cached[2]
        state, champion = rollout.load_state(model), self._champion_of(model)
        with self._lock:
            self._cache[model] = (time.monotonic(), state, champion)
        return state, champion

    @staticmethod
    def _parse(flag_key: str, kind: str) -> str | None:
        if not flag_key.startswith(PREFIX) or not flag_key.endswith(f".{kind}"):
            return None
        model = flag_key[len(PREFIX) : -len(kind) - 1]
        return model or None

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        model = self._parse(flag_key, "variant")
        if model is None:
            return FlagResolutionDetails(default_value, ErrorCode.FLAG_NOT_FOUND, f"no flag {flag_key}", Reason.ERROR)
        key = evaluation_context.targeting_key if evaluation_context else None
        if not key:
            return FlagResolutionDetails(
                default_value, ErrorCode.TARGETING_KEY_MISSING, "the entity key goes in targeting_key", Reason.ERROR
            )
        state, champion = self._state(model)
        split = rollout.serving(model, champion) if state is not None else rollout.Serving()
        if champion is None:
            return FlagResolutionDetails(default_value, ErrorCode.GENERAL, f"{model} has no champion", Reason.ERROR)
        if split.canary_version is None or split.share <= 0:
            only = {"version": champion}
            return FlagResolutionDetails(CHAMPION, reason=Reason.STATIC, variant=CHAMPION, flag_metadata=only)
        try:
            typed = rollout.typed_key(key, self._dtype_of(model))
        except ValueError:
            return FlagResolutionDetails(
                default_value, ErrorCode.INVALID_CONTEXT, f"{key!r} is not a {model} entity key", Reason.ERROR
            )
        arm = CANARY if bool(rollout.in_canary(model, typed, split.share)[0]) else CHAMPION
        version = split.canary_version if arm == CANARY else champion
        metadata: dict[str, bool | int | float | str] = {
            "version": version,
            "rollout": split.rollout_id,
            "share": split.share,
        }
        return FlagResolutionDetails(arm, reason=Reason.SPLIT, variant=arm, flag_metadata=metadata)

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        model = self._parse(flag_key, "kill_switch")
        if model is None:
            return FlagResolutionDetails(default_value, ErrorCode.FLAG_NOT_FOUND, f"no flag {flag_key}", Reason.ERROR)
        state, _ = self._state(model)
        killed = state is not None and state.status == rollout.ABORTED
        metadata = {"rollout": state.rollout_id if state else "", "status": state.status if state else "none"}
        variant = "on" if killed else "off"
        return FlagResolutionDetails(killed, reason=Reason.STATIC, variant=variant, flag_metadata=metadata)

    def _not_found(self, flag_key: str, default_value: Any) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(default_value, ErrorCode.FLAG_NOT_FOUND, f"no flag {flag_key}", Reason.ERROR)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._not_found(flag_key, default_value)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._not_found(flag_key, default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return self._not_found(flag_key, default_value)
